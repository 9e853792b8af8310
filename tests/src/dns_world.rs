//! Signed zones under a private root, served on loopback (owned by the DNS work).
