//! nftables through its netlink protocol: berth's one table per instance, built as a value
//! ([`ruleset`]), applied as atomic batches and read back ([`socket`]), watched for drift
//! ([`watch`]), published ports as map elements ([`elements`]), and the check for other tables that would drop the bridge's traffic
//! ([`forward`]).

pub mod elements;
pub mod expr;
pub mod forward;
pub mod ruleset;
pub mod socket;
pub mod watch;
