//! Running `nft`: a script on its standard input (one transaction: all of it applies or none),
//! and the table read back as JSON.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::script::{Current, PUBLISHED};
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

/// The table as JSON objects, `None` when it does not exist.
pub async fn list(table: &str) -> Result<Option<Vec<Value>>, FirewallError> {
    match run(&["-j", "list", "table", "inet", table], None).await {
        Ok(out) => {
            let v: Value =
                serde_json::from_str(&out).map_err(|e| FirewallError::Nft(format!("nft -j gave no JSON: {e}")))?;
            Ok(Some(v["nftables"].as_array().cloned().unwrap_or_default()))
        }
        Err(FirewallError::Nft(why)) if why.contains("No such file or directory") => Ok(None),
        Err(e) => Err(e),
    }
}

/// The chains, sets and base-chain jumps of a listing.
pub fn current(items: &[Value]) -> Current {
    let mut now = Current::default();
    for item in items {
        if let Some(c) = item.get("chain") {
            now.chains.extend(c["name"].as_str().map(String::from));
        } else if let Some(s) = item.get("set") {
            now.sets.extend(s["name"].as_str().map(String::from));
        } else if let Some(r) = item.get("rule").filter(|r| r["chain"] == PUBLISHED) {
            now.jump_tags.push(r["comment"].as_str().unwrap_or("").to_string());
        }
    }
    now
}

/// A rule's counter in a listing: `(chain, comment, packets, bytes)`.
pub fn counters(items: &[Value]) -> Vec<(String, String, u64, u64)> {
    items
        .iter()
        .filter_map(|item| {
            let r = item.get("rule")?;
            let counter = r["expr"].as_array()?.iter().find_map(|e| e.get("counter"))?;
            Some((
                r["chain"].as_str()?.to_string(),
                r["comment"].as_str().unwrap_or("").to_string(),
                counter["packets"].as_u64().unwrap_or(0),
                counter["bytes"].as_u64().unwrap_or(0),
            ))
        })
        .collect()
}
