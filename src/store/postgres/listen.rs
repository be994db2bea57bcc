//! Wake-ups from other instances: one task holds a connection of its own that `LISTEN`s on
//! `waotp_work`, which every step that queues work notifies on commit, and wakes this instance's
//! outbox worker and timer loop. When the connection drops it reconnects with a growing pause
//! (and wakes both loops once connected: notifications sent meanwhile were lost). The loops'
//! own short polls stay as the fallback, so a lost notification only delays.

use super::sessions::WORK_CHANNEL;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;

/// The first pause before reconnecting, doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The listening task; stops when dropped.
#[derive(Debug)]
pub struct Listener(tokio::task::JoinHandle<()>);

impl Drop for Listener {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts listening on the database `config` names; each notification wakes every notify in
/// `wake`.
pub fn listen(config: tokio_postgres::Config, wake: Vec<Arc<Notify>>) -> Listener {
    Listener(tokio::spawn(async move {
        let mut backoff = MIN_BACKOFF;
        loop {
            match listen_once(&config, &wake).await {
                // Connected, then lost: start the pauses over.
                Ok(()) => backoff = MIN_BACKOFF,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for work from other instances");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            tokio::time::sleep(backoff).await;
        }
    }))
}

/// One connection's life: `Ok` once it was listening and then ended.
async fn listen_once(
    config: &tokio_postgres::Config,
    wake: &[Arc<Notify>],
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tokio_postgres::NoTls).await?;
    // The connection must be polled for the LISTEN to complete, and then for notifications;
    // the client must live as long, or the connection ends.
    let listen = async move {
        client
            .batch_execute(&format!("LISTEN {WORK_CHANNEL}"))
            .await?;
        // Work queued while this instance was not listening was announced to nobody.
        wake_all(wake);
        std::future::pending::<()>().await;
        Ok::<_, tokio_postgres::Error>(())
    };
    let pump = async {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => wake_all(wake),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    };
    tokio::select! {
        r = listen => r,
        r = pump => r,
    }
}

fn wake_all(wake: &[Arc<Notify>]) {
    for n in wake {
        n.notify_one();
    }
}
