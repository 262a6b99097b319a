//! The unix-socket API: the agent's [`server`] and the CLI's [`client`].

pub mod client;
pub mod server;
pub mod stream;
