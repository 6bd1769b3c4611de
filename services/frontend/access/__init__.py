"""Who gets in: TLS and mTLS (`tls`), credentials (`passwords`, `oidc`), the identity a
request proved (`identity`), Angos's access policies over CEL (`policy`), authorization
webhooks (`webhook`), and the middleware that decides before any handler runs."""
