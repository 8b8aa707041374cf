"""The way to the API: one HTTP/1.1 client over TLS, through a CONNECT proxy when there is one.

    client.py        `RecordingsClient`: one GET per id, connections pooled; the only
                     module that knows the API's URL and answers
    http1.py         the HTTP/1.1 protocol as a state machine; every limit capped
    tls.py           the TLS context: CAs, client certificates, a demanded certificate told apart
    tunnel.py        CONNECT through an http:// proxy, with Basic credentials
    proxy_env.py     which proxy, from --proxy or HTTPS_PROXY and NO_PROXY, as curl does
    credentials.py   the token and proxy credentials: read from files, checked, rotated

Policy (pacing, retries, what an answer means for an id) is above this, in
`fetcher.py` and `pacing/`; nothing here decides whether to try again.
"""
