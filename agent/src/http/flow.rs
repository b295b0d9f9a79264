//! How a phase of a request ends: it goes on with its output (`Ok`), or the request stops
//! there with what the client gets (`Err(Stop)`).
use http::Response;

use super::{body::ProxyBody, error::ProxyError};

/// The request goes no further.
pub enum Stop {
    /// Moat answers itself and refuses nothing: a document it serves.
    Serve(Box<Response<ProxyBody>>),
    /// Refused: the client gets the error's response.
    Refuse(ProxyError),
    /// Refused, and answered the way its transport needs (a denial on a legacy session:
    /// accepted here, the error sent on the session's stream).
    RefuseWith(ProxyError, Box<Response<ProxyBody>>),
}

impl From<ProxyError> for Stop {
    fn from(e: ProxyError) -> Self {
        Stop::Refuse(e)
    }
}

/// What a phase returns.
pub type Flow<T> = Result<T, Stop>;
