//! What the tests and benches reach that the product does not export: the
//! record parser (property tests), and failures the test suite injects
//! through the environment, to reach error paths that a healthy system
//! never takes. Not part of the product.

pub use crate::store::parse_record;

/// Set to make supervising a freshly spawned server fail (as `pidfd_open`
/// does on a kernel without it), so a test can check the server is stopped.
pub const FAIL_SUPERVISE: &str = "SHAREDSERVER_TEST_FAIL_SUPERVISE";

/// The injected failure to supervise a new server, if the test asked for one.
pub fn supervise_failure() -> Option<std::io::Error> {
    std::env::var_os(FAIL_SUPERVISE).map(|_| {
        std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!("injected by {FAIL_SUPERVISE}"),
        )
    })
}
