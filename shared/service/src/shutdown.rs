//! SIGTERM and SIGINT as a future: the one place the agent listens for signals.

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "Cannot listen for SIGINT.");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "Cannot listen for SIGTERM.");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received; shutting down."),
        () = term => tracing::info!("SIGTERM received; shutting down."),
    }
}

/// Polls `shutdown` once, so that [`signal`]'s handlers are installed before the caller
/// announces anything: a SIGTERM that arrives right after "listening" is a graceful stop, not the
/// default action's kill. `None` when it has already resolved.
pub async fn armed<F>(shutdown: F) -> Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut shutdown: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(shutdown);
    tokio::select! {
        biased;
        () = &mut shutdown => None,
        () = std::future::ready(()) => Some(shutdown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_armed_signal_has_its_handler_before_the_first_await() {
        let Some(shutdown) = armed(signal()).await else { panic!("no signal yet") };
        // Without the handler installed, this SIGTERM would end the test process.
        let status =
            std::process::Command::new("kill").args(["-TERM", &std::process::id().to_string()]).status().expect("kill");
        assert!(status.success());
        tokio::time::timeout(std::time::Duration::from_secs(10), shutdown).await.expect("the signal arrives");
        assert!(armed(std::future::ready(())).await.is_none(), "an already resolved future");
    }
}
