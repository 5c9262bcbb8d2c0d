//! A panic anywhere in the agent ends it. tokio catches a panicking task and carries on without
//! it, so a dead status writer, watch or HTTP server would go unnoticed while /livez, answered by
//! another task, stays green. Ended, the agent is restarted by the kubelet and starts again from
//! its pins, without a connection lost (the datapath runs on without it meanwhile).

/// Makes every panic, on any thread or task, abort the process after the usual message.
pub fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    const CHILD: &str = "SLUICE_TEST_PANIC_CHILD";

    /// Runs itself again as a child that panics in a tokio task: the child must die of SIGABRT,
    /// not exit normally after tokio swallowed the panic.
    #[test]
    fn a_panicking_task_ends_the_process() {
        if std::env::var_os(CHILD).is_some() {
            super::abort_on_panic();
            let rt = tokio::runtime::Runtime::new().unwrap();
            let joined = rt.block_on(async { tokio::spawn(async { panic!("a task of the agent fails") }).await });
            println!("the process survived its task's panic: {joined:?}");
            std::process::exit(0);
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash::tests::a_panicking_task_ends_the_process", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{}", String::from_utf8_lossy(&out.stdout));
    }
}
