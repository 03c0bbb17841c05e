//! Integration tests, compiled into one binary: the client's wire behaviour
//! against wiremock, the sandbox's contract, and the engine end to end.

mod architecture;
mod bad_input;
mod browser;
mod cli;
mod client_wire;
mod config_files;
mod crash;
mod deploy_kit;
mod engine;
mod evidence;
mod failover;
mod faults;
mod helpers;
mod ledger;
mod operator;
mod postgres;
mod profiles;
mod rules_props;
mod safety;
mod sandbox_contract;
mod scale;
mod security;
mod upgrade;
mod window;
