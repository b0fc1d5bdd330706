//! From the netlink monitor to the agent's trigger channel.

use tokio::sync::{mpsc, watch};

use crate::dataplane::monitor::{KernelEvent, Monitor};

/// Forward kernel events (bounded: an agent that falls behind makes the
/// monitor lag, the kernel overrun, and the agent resync in full), and keep
/// the monitor watching the uplink the agent uses.
pub fn pump(
    mut monitor: Monitor,
    mut uplink: watch::Receiver<Option<String>>,
) -> mpsc::Receiver<KernelEvent> {
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        let mut follow_uplink = true;
        loop {
            tokio::select! {
                event = monitor.next() => match event {
                    Some(event) => {
                        if tx.send(event).await.is_err() {
                            return;
                        }
                    }
                    None => return,
                },
                changed = uplink.changed(), if follow_uplink => match changed {
                    Ok(()) => monitor.watch_uplink(uplink.borrow_and_update().as_deref()),
                    Err(_) => follow_uplink = false,
                },
            }
        }
    });
    rx
}
