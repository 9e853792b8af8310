//! Outbound TLS for SMTP on OpenSSL: opportunistic with legacy interop, and DANE (RFC 7671, RFC 7672)
