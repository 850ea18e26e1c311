//! MySQL's errors as the gateway's: the server's statement timeout as ours, a packet over the
//! client-side limit as a result over the cap, a connection that cannot be opened as the
//! datasource unavailable (naming the cause when it is TLS), and every message scrubbed of the
//! password.

use super::*;

/// MariaDB error 1969 (max_statement_time) and MySQL error 3024 (max_execution_time).
const SERVER_TIMEOUT_CODES: [u16; 2] = [1969, 3024];

/// mysql_common's codec refuses a packet over the client-side `max_allowed_packet` before
/// buffering it; the error arrives as an `io::Error` wrapping its `PacketTooLarge` (mysql_common
/// is not a direct dependency, so it is recognised by its text).
pub(super) fn packet_too_large(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Driver(mysql_async::DriverError::PacketTooLarge) => true,
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => io
            .get_ref()
            .is_some_and(|inner| inner.to_string().contains("max_allowed_packet")),
        _ => false,
    }
}

impl MysqlManager {
    fn secrets(&self) -> [&str; 1] {
        [self.target.password.expose()]
    }

    pub(super) fn scrub(&self, message: &str) -> String {
        scrub(message, &self.secrets())
    }

    /// Maps the failure to open a connection (a refused login or TLS handshake): the datasource
    /// is unavailable, with TLS's causes named (`tls::TlsPlan::explain`).
    pub(super) fn connect_error(&self, e: mysql_async::Error) -> ExecError {
        let text = match &e {
            mysql_async::Error::Server(se) => self.scrub(&se.message),
            other => self.scrub(&other.to_string()),
        };
        ExecError::Unavailable(self.tls.explain(&e, text))
    }

    /// Maps a driver error; the server's own statement timeout counts as our timeout, and a packet
    /// over the client-side limit as a result over the cap.
    pub(super) fn map_err(&self, e: mysql_async::Error, timeout: Duration) -> ExecError {
        if packet_too_large(&e) {
            return ExecError::ResultTooLarge(self.settings.max_result_bytes);
        }
        match e {
            mysql_async::Error::Server(se) => {
                if SERVER_TIMEOUT_CODES.contains(&se.code) {
                    ExecError::Timeout(timeout)
                } else {
                    ExecError::QueryFailed {
                        message: self.scrub(&se.message),
                        sqlstate: Some(se.state),
                    }
                }
            }
            mysql_async::Error::Driver(mysql_async::DriverError::StmtParamsMismatch {
                required,
                supplied,
            }) => ExecError::BadParams(format!(
                "the statement has {required} placeholders but {supplied} params were given"
            )),
            other => ExecError::Unavailable(self.scrub(&other.to_string())),
        }
    }
}
