//! DNS with DNSSEC status for mail: MX, addresses, TLSA (RFC 4035, RFC 7672 §2.2)
