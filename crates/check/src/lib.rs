//! The TLS check: DNS facts plus probes, judged by mailtls-core
