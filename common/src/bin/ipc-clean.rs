//! `ipc-clean`: lists, and with `--remove` removes, every object our programs left.
//!
//! A reader killed with SIGKILL cannot remove its FIFO, queue or segment; the
//! next reader then refuses to start and names the leftover. This lists them all,
//! in every namespace (private directory, `/dev/shm`, POSIX queues, System V), with
//! the command that removes each one by hand. `make clean-ipc` runs `--remove`.
//! Objects a running process still holds (its lock is taken) are listed as in
//! use and never removed; a private directory that is not safe (a symbolic link,
//! not ours, open to others) is refused rather than emptied.
//!
//! ```text
//! $ ipc-clean
//! fifo              /run/user/0/ipc-demos/fifo   (rm /run/user/0/ipc-demos/fifo)
//! ipc-clean: 1 object of ours left; remove with: ipc-clean --remove
//! $ ipc-clean --remove
//! ipc-clean: removed fifo /run/user/0/ipc-demos/fifo
//! ```

use std::process::ExitCode;

use ipc_common::clean;
use ipc_common::error::{Result, report};
use ipc_common::opts::{self, VersionFlag};
use ipc_common::paths;

const BIN: &str = "ipc-clean";

/// List every ipc-demos object left in the kernel or the file system, and remove them.
#[derive(argh::FromArgs, Debug)]
#[argh(example = "ipc-clean            # list\nipc-clean --remove   # remove them all")]
struct Args {
    /// remove what is listed
    #[argh(switch)]
    remove: bool,
    /// exit 1 if anything is left (for `make test`)
    #[argh(switch)]
    check: bool,
    /// print the version and exit
    #[argh(switch)]
    version: bool,
}

impl VersionFlag for Args {
    fn version(&self) -> bool {
        self.version
    }
}

fn main() -> ExitCode {
    let args: Args = match opts::parse(BIN) {
        Ok(args) => args,
        Err(code) => return code,
    };
    match run(&args) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(err) => report(BIN, Err(err)),
    }
}

/// Returns how many objects are left afterwards.
fn run(args: &Args) -> Result<usize> {
    let found = clean::scan()?;
    if found.is_empty() {
        ipc_common::say!("{BIN}: nothing of ours left");
        return Ok(0);
    }
    if !args.remove {
        for item in &found {
            let how =
                if item.live { "in use by a running process".to_string() } else { item.command() };
            println!("{:<18} {}   ({how})", item.kind, item.name);
        }
        let s = if found.len() == 1 { "" } else { "s" };
        ipc_common::say!(
            "{BIN}: {} object{s} of ours left; remove with: {BIN} --remove",
            found.len()
        );
        return Ok(if args.check { found.len() } else { 0 });
    }
    let mut left = 0;
    for item in &found {
        if item.live {
            ipc_common::say!(
                "{BIN}: kept {} {}: in use by a running process",
                item.kind,
                item.name
            );
            left += 1;
            continue;
        }
        match item.remove() {
            Ok(()) => ipc_common::say!("{BIN}: removed {} {}", item.kind, item.name),
            Err(err) => {
                ipc_common::say!("{BIN}: {err}");
                left += 1;
            }
        }
    }
    // The private directory itself goes too once empty (rmdir fails if not).
    let _ = std::fs::remove_dir(paths::private_dir_path());
    Ok(left)
}
