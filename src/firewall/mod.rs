//! A firewall per server (issue 32): allow and deny lists and flood limits on a server's own
//! published ports, enforced by the kernel with nftables in a table of this daemon's own.
//!
//! The rules live in each server's record (`ContainerRecord::firewall`); the table is derived
//! from the records and brought to them by [`Firewall::sync`] in one `nft -f -` transaction
//! (see `script.rs` for the table's shape and `docs/firewall.md` for why). A change to one
//! server replaces that server's chain only; the table goes when no server has rules.

pub mod nft;
pub mod rule;
pub mod script;

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use rule::{RawRule, Rule};
use script::Plan;

use crate::error::Error;
use crate::store::{State, Store};

/// Why the firewall could not be read or changed.
#[derive(Debug)]
pub enum FirewallError {
    /// `nft` is not installed.
    Missing,
    /// `nft` refused or failed.
    Nft(String),
}

impl fmt::Display for FirewallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FirewallError::Missing => {
                write!(f, "the firewall needs nftables: `nft` was not found (apt-get install nftables)")
            }
            FirewallError::Nft(why) => write!(f, "the firewall could not be changed: {why}"),
        }
    }
}

impl From<FirewallError> for Error {
    fn from(e: FirewallError) -> Error {
        Error::Internal(e.to_string())
    }
}

/// A rule with what it dropped.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Counted {
    #[serde(flatten)]
    pub rule: Rule,
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
}

/// Counters for `/metrics`: `(server, rule index, port/protocol, packets)`, as last read.
type Snapshot = Vec<(String, usize, String, u64)>;

/// How old the counters `/metrics` shows may get before a scrape reads them again.
const SNAPSHOT_AGE: Duration = Duration::from_secs(2);

/// This daemon's nftables table and the one lock every change to it takes.
pub struct Firewall {
    table: String,
    lock: tokio::sync::Mutex<()>,
    snapshot: Mutex<(Option<Instant>, Snapshot)>,
}

impl Firewall {
    /// The table of the daemon whose instance id is `instance`: `lightd_<first 12 hex digits>`,
    /// so daemons sharing a host never touch each other's table.
    pub fn new(instance: &str) -> Firewall {
        let hex: String = instance.chars().filter(char::is_ascii_hexdigit).take(12).collect();
        Firewall { table: format!("lightd_{hex}"), lock: tokio::sync::Mutex::new(()), snapshot: Mutex::default() }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Brings the table to what the records say: a missing chain made, a stale one removed,
    /// nothing touched when it already matches (so counters carry on); the whole table removed
    /// when no server has rules.
    pub async fn sync(&self, store: &Store) -> Result<(), FirewallError> {
        let _held = self.lock.lock().await;
        let plan = store.read(plan);
        self.reach(&plan).await.map(|_| ())
    }

    /// Applies `rules` as the rules of `id` and saves them in its record, checked against its
    /// ports under the firewall's lock; on any failure the table is brought back to the record.
    /// Answers the rules with their counters (zero for a rule set new to the kernel, without
    /// asking it: listing counters costs as much as listing every rule).
    pub async fn replace(&self, store: &Store, id: &str, raw: Vec<RawRule>) -> Result<Vec<Counted>, Error> {
        let _held = self.lock.lock().await;
        let (ports, mut state) = store.read(|s| {
            let rec = s.containers.get(id).ok_or_else(crate::lifecycle::not_found)?;
            Ok::<_, Error>((rec.ports.clone(), s.clone()))
        })?;
        let rules = rule::validate(raw, &ports).map_err(Error::BadRequest)?;
        if let Some(rec) = state.containers.get_mut(id) {
            rec.firewall = rules.clone();
        }
        let wanted = plan(&state);
        let applied = self.reach(&wanted).await;
        let fresh = match &applied {
            Ok(before) => wanted.chains.iter().filter(|c| c.id == id).all(|c| !before.chains.contains(&c.name)),
            Err(_) => true,
        };
        let saved = match applied {
            Ok(_) => {
                store
                    .update(|s| {
                        let rec = s.containers.get_mut(id).ok_or_else(crate::lifecycle::not_found)?;
                        if rec.ports != ports {
                            return Err(Error::Conflict("the server's ports changed meanwhile; try again".into()));
                        }
                        rec.firewall = rules.clone();
                        rec.updated_at = crate::model::now();
                        Ok(())
                    })
                    .await
            }
            Err(e) => Err(e.into()),
        };
        if let Err(e) = saved {
            let back = store.read(plan);
            if let Err(again) = self.reach(&back).await {
                crate::error!("{id}: the firewall could not be brought back to the record: {again}");
            }
            return Err(e);
        }
        self.forget_snapshot();
        match fresh {
            true => Ok(rules.into_iter().map(|rule| Counted { rule, dropped_packets: 0, dropped_bytes: 0 }).collect()),
            false => self.counted(store, id).await,
        }
    }

    /// The rules of `id` with what each dropped.
    pub async fn counted(&self, store: &Store, id: &str) -> Result<Vec<Counted>, Error> {
        let rules =
            store.read(|s| s.containers.get(id).map(|r| r.firewall.clone())).ok_or_else(crate::lifecycle::not_found)?;
        let mut counted: Vec<Counted> =
            rules.into_iter().map(|rule| Counted { rule, dropped_packets: 0, dropped_bytes: 0 }).collect();
        if counted.is_empty() {
            return Ok(counted);
        }
        let prefix = script::chain_prefix(id);
        for (name, packets, bytes) in nft::counters(&self.table).await? {
            if let Some(c) = counter_index(&name, &prefix).and_then(|i| counted.get_mut(i)) {
                c.dropped_packets += packets;
                c.dropped_bytes += bytes;
            }
        }
        Ok(counted)
    }

    /// Writes the dropped-packet counters to `/metrics` as last read, and has them read again
    /// in the background when they are older than [`SNAPSHOT_AGE`].
    pub fn render_metrics(self: &std::sync::Arc<Self>, store: &std::sync::Arc<Store>, out: &mut String) {
        use std::fmt::Write;
        let (read_at, rows) = self.snapshot.lock().map(|s| s.clone()).unwrap_or_default();
        let _ = writeln!(
            out,
            "# HELP lightd_firewall_dropped_packets_total Packets a server's firewall rule dropped.\n\
             # TYPE lightd_firewall_dropped_packets_total counter"
        );
        for (id, i, port, packets) in &rows {
            let _ = writeln!(
                out,
                "lightd_firewall_dropped_packets_total{{container=\"{}\",rule=\"{i}\",port=\"{port}\"}} {packets}",
                crate::metrics::escape(id)
            );
        }
        if read_at.is_none_or(|t| t.elapsed() > SNAPSHOT_AGE) {
            // Marked read now, so scrapes in a row start one read, not one each.
            if let Ok(mut s) = self.snapshot.lock() {
                s.0 = Some(Instant::now());
            }
            let (me, store) = (std::sync::Arc::clone(self), std::sync::Arc::clone(store));
            crate::shutdown::detach(async move { me.read_snapshot(&store).await });
        }
    }

    async fn read_snapshot(&self, store: &Store) {
        let servers: Vec<(String, Vec<Rule>)> = store.read(|s| {
            s.containers
                .values()
                .filter(|r| !r.firewall.is_empty())
                .map(|r| (r.internal_id.clone(), r.firewall.clone()))
                .collect()
        });
        let mut rows = Snapshot::new();
        if !servers.is_empty() {
            let counters = match nft::counters(&self.table).await {
                Ok(c) => c,
                Err(e) => {
                    crate::warn!("cannot read the firewall's counters: {e}");
                    return;
                }
            };
            for (id, rules) in servers {
                let prefix = script::chain_prefix(&id);
                for (i, r) in rules.iter().enumerate() {
                    let packets =
                        counters.iter().filter(|c| counter_index(&c.0, &prefix) == Some(i)).map(|c| c.1).sum();
                    rows.push((id.clone(), i, r.port_name(), packets));
                }
            }
        }
        if let Ok(mut s) = self.snapshot.lock() {
            *s = (Some(Instant::now()), rows);
        }
    }

    fn forget_snapshot(&self) {
        if let Ok(mut s) = self.snapshot.lock() {
            s.0 = None;
        }
    }

    /// Takes the table to `plan` (the caller holds the lock).
    /// Returns what the table held before.
    async fn reach(&self, plan: &Plan) -> Result<script::Current, FirewallError> {
        let current = match nft::current(&self.table).await {
            Ok(c) => c,
            // Without nft there is nothing to remove; rules to apply need it.
            Err(FirewallError::Missing) if plan.chains.is_empty() => return Ok(script::Current::default()),
            Err(e) => return Err(e),
        };
        if let Some(s) = script::script(&self.table, Some(&current), plan) {
            nft::apply(&s).await?;
        }
        Ok(current)
    }
}

/// The rule index of a named counter of the server whose chains start with `prefix`
/// (`s_<id>_h<digest>x<rules>_n3` -> 3).
fn counter_index(name: &str, prefix: &str) -> Option<usize> {
    let (chain_digest, index) = name.strip_prefix(prefix)?.rsplit_once("_n")?;
    chain_digest.bytes().all(|b| b.is_ascii_hexdigit() || b == b'x').then_some(())?;
    index.parse().ok()
}

/// The table the records ask for.
fn plan(s: &State) -> Plan {
    Plan::new(s.containers.values().map(|r| (r.internal_id.as_str(), &r.ports[..], &r.firewall[..])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_told_apart_by_server() {
        let prefix = script::chain_prefix("a");
        assert_eq!(counter_index(&format!("{prefix}0123456789abx3_n2"), &prefix), Some(2));
        // `a_b`'s chains start with `s_a__b_h`: never taken for `a`'s.
        let other = script::chain_prefix("a_b");
        assert_eq!(counter_index(&format!("{other}0123456789abx3_n2"), &prefix), None);
        assert_eq!(counter_index("jumps_0123", &prefix), None);
    }
}
