//! The `mailtls` command; see the library for what it does.

fn main() -> std::process::ExitCode {
    mailtls::run()
}
