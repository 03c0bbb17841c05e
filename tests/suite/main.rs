//! Integration tests, compiled into one binary: the client's wire behaviour
//! against wiremock, the sandbox's contract, and the engine end to end.

mod client_wire;
mod helpers;
mod sandbox_contract;
