//! The race test: a server swapping a directory for a symlink to the outside in a tight loop
//! while every operation runs through the root, again and again.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::symlink;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use rustix::fs::{renameat_with, RenameFlags, CWD};

use super::testbed::{is_root, Bed};
use super::{extract, pack, Ignore};

/// Rounds of operations; each round runs every operation at least once.
const ROUNDS: usize = 300;

#[test]
fn a_directory_swapped_for_a_link_never_leads_outside() {
    let bed = Bed::new("race");
    let (swap, link) = (bed.path("tree/swap"), bed.path("tree/swap_link"));
    let outside = bed.outside();
    let stop = Arc::new(AtomicBool::new(false));
    let racer = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // `swap` flips between a real directory and a symlink to the outside directory.
                if renameat_with(CWD, &swap, CWD, &link, RenameFlags::EXCHANGE).is_ok() {
                    swaps += 1;
                } else {
                    // A round deleted one or both: the server starts over, taking care not to
                    // write through its own link (only it ever makes a symlink at these names).
                    let _ = fs::remove_dir_all(&swap).or_else(|_| fs::remove_file(&swap));
                    let _ = fs::remove_dir_all(&link).or_else(|_| fs::remove_file(&link));
                    let _ = fs::create_dir_all(swap.join("d"));
                    let _ = fs::write(swap.join("f"), b"inside");
                    let _ = symlink(&outside, &link);
                }
            }
            swaps
        })
    };

    let archive = bed.base.join("upload.tar");
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(1);
    header.set_mode(0o644);
    tar.append_data(&mut header, "d/x", &b"x"[..]).unwrap();
    fs::write(&archive, tar.into_inner().unwrap()).unwrap();

    let root = &bed.root;
    for round in 0..ROUNDS {
        let _ = root.list("tree/swap");
        let _ = root.list("tree/swap/d");
        let _ = root.stat("tree/swap/f");
        let _ = root.open_read("tree/swap/f");
        if let Ok(mut upload) = root.create_temp("tree/swap/d/new") {
            let _ = upload.file().write_all(b"new");
            let _ = upload.commit();
        }
        let _ = root.mkdir("tree/swap/d/made");
        let _ = root.rename("tree/swap/d/new", "tree/swap/d/renamed", true);
        let _ = root.chmod("tree/swap/f", "0666");
        let _ = root.chmod("tree/swap/d", "0777");
        let _ = root.copy("tree", "copy", true);
        let _ = root.copy("tree/swap/f", "tree/swap/g", true);
        let _ = root.delete(&["tree/swap/g", "tree/swap/d/made"]);
        let _ = root.delete(&["copy"]);
        let _ = pack(root, "", &Ignore::default(), io::sink(), |_, _| {});
        let _ = pack(root, "tree/swap", &Ignore::default(), io::sink(), |_, _| {});
        let _ = root.usage();
        let _ = extract(root, "tree/swap", fs::File::open(&archive).unwrap());
        if round % 10 == 0 {
            let _ = root.delete(&["tree"]);
            if is_root() {
                let _ = root.chown_tree(1000, 1000);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = racer.join().unwrap();
    println!("{swaps} swaps in {ROUNDS} rounds");
    assert!(swaps > 100, "the racer hardly ran ({swaps} swaps)");
    bed.assert_outside_untouched();
}
