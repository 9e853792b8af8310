//! Test harness: signed DNS zones and SMTP servers on loopback.
