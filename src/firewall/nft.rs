//! Running `nft`: a script on its standard input (one transaction: all of it applies or none),
//! and the table read back as JSON.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::script::Current;
use super::FirewallError;

/// Longest one `nft` run may take.
const NFT_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `nft` with `args`, `stdin` written to it; its standard output.
async fn run(args: &[&str], stdin: Option<&str>) -> Result<String, FirewallError> {
    let mut cmd = tokio::process::Command::new("nft");
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => FirewallError::Missing,
        _ => FirewallError::Nft(format!("cannot run nft: {e}")),
    })?;
    let input = stdin.unwrap_or("").to_string();
    let mut pipe = child.stdin.take();
    let work = async move {
        if let Some(p) = pipe.as_mut() {
            p.write_all(input.as_bytes()).await?;
        }
        drop(pipe);
        child.wait_with_output().await
    };
    let out = tokio::time::timeout(NFT_TIMEOUT, work)
        .await
        .map_err(|_| FirewallError::Nft(format!("nft did not finish within {} s", NFT_TIMEOUT.as_secs())))?
        .map_err(|e| FirewallError::Nft(format!("nft: {e}")))?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(FirewallError::Nft(format!("nft {}: {why}", args.join(" "))));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Applies `script` as one transaction.
pub async fn apply(script: &str) -> Result<(), FirewallError> {
    run(&["-f", "-"], Some(script)).await.map(|_| ())
}

/// The items of kind `kind` (`chains`, `sets`, `counters`) of every table, as JSON objects
/// (`nft -j list <kind>`: names and counters only, no rules, so it stays fast with many).
async fn list(kind: &str, terse: bool) -> Result<Vec<Value>, FirewallError> {
    let args: &[&str] = if terse { &["-j", "-t", "list", kind] } else { &["-j", "list", kind] };
    let out = run(args, None).await?;
    let v: Value = serde_json::from_str(&out).map_err(|e| FirewallError::Nft(format!("nft -j gave no JSON: {e}")))?;
    Ok(v["nftables"].as_array().cloned().unwrap_or_default())
}

/// `(kind, object)` pairs of `table` (family inet) among `items`.
fn of_table<'a>(items: &'a [Value], key: &'a str, table: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    items.iter().filter_map(move |i| i.get(key)).filter(move |o| o["family"] == "inet" && o["table"] == table)
}

/// What `table` holds, by name (`list counters` is left out: it costs as much as listing
/// every rule).
pub async fn current(table: &str) -> Result<Current, FirewallError> {
    let names = |items: &[Value], key: &str| -> std::collections::BTreeSet<String> {
        of_table(items, key, table).filter_map(|o| o["name"].as_str().map(String::from)).collect()
    };
    Ok(Current {
        chains: names(&list("chains", false).await?, "chain"),
        sets: names(&list("sets", true).await?, "set"),
    })
}

/// The named counters of `table`: `(name, packets, bytes)`.
pub async fn counters(table: &str) -> Result<Vec<(String, u64, u64)>, FirewallError> {
    let items = list("counters", false).await?;
    Ok(of_table(&items, "counter", table)
        .filter_map(|c| Some((c["name"].as_str()?.to_string(), c["packets"].as_u64()?, c["bytes"].as_u64()?)))
        .collect())
}
