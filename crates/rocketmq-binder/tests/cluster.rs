//! The local cluster starts real RocketMQ servers, survives a broker SIGKILL, and restarts
//! the broker on the same store.

use rocketmq_binder::LocalCluster;

#[tokio::test]
async fn starts_kills_and_restarts_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster =
        LocalCluster::start(dir.path()).await.expect("cluster starts and the broker is ready");
    let ports = cluster.ports();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", ports.namesrv)).is_ok(),
        "name server listens"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", ports.broker)).is_ok(), "broker listens");

    cluster.kill_broker().await;
    assert!(std::net::TcpStream::connect(("127.0.0.1", ports.broker)).is_err(), "broker is gone");
    cluster.start_broker().await.expect("broker restarts on the same store");
    assert!(std::net::TcpStream::connect(("127.0.0.1", ports.broker)).is_ok());
    assert!(
        dir.path().join("broker/store").read_dir().unwrap().next().is_some(),
        "the store is on disk"
    );
    cluster.stop().await;
}
