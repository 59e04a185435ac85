//! A cluster census is complete or not published: with a master failed,
//! no pass publishes the other masters' keys as the whole (it used to: two
//! thirds of the keys, a false drop in the middle of an incident), and with
//! nothing left to read a shard, the pass fails naming its slots.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::census::CONFIG;
use crate::helpers::{metric_value, poll, series, write_file, ChromaServer, Daemon};
use crate::topologies::Cluster;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_master_failed_no_pass_publishes_part_of_the_keyspace() {
    let mut cluster = Cluster::start();
    let chroma = ChromaServer::start();
    let seed = cluster.nodes[0].port;
    // 3,000 keys, spread over the three masters.
    let commands: String = (0..3000)
        .map(|i| format!("SET message_store:{i} v\n"))
        .collect();
    cluster.write(&commands);
    // No failover: a failed master stays failed, as with nofailover.
    for node in &cluster.nodes {
        node.cli(&["CONFIG", "SET", "cluster-replica-no-failover", "yes"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let config = CONFIG.replace("interval = \"2s\"", "interval = \"1s\"")
        + &format!("[redis]\nmode = \"cluster\"\nurl = \"redis://127.0.0.1:{seed}\"\n");
    let path = write_file(dir.path(), "config.toml", &config);
    let daemon = Daemon::start(
        &[
            "--config.file".into(),
            path,
            "--chroma.url".into(),
            chroma.url(),
        ],
        dir.path(),
    );
    let chat = r#"llmcache_census_redis_keys{group="chat"}"#;
    let last = r#"llmcache_census_last_success_timestamp_seconds{store="redis"}"#;
    let first_pass = |after: f64| {
        let daemon = &daemon;
        async move {
            poll("a census pass", Duration::from_secs(40), || async {
                let text = daemon.try_get("/metrics").await?;
                metric_value(&text, last)
                    .filter(|at| *at > after)
                    .map(|_| text)
            })
            .await
        }
    };
    let text = first_pass(0.0).await;
    assert_eq!(series(&text, chat), 3000.0);

    // A master that is not the seed dies. Every pass published after the
    // cluster flags it counts every key (through its replica, where the
    // client reaches it), or none is published.
    let (victim, replica) = shard_away_from(&cluster, seed);
    cluster.nodes[victim].kill();
    let victim_port = cluster.nodes[victim].port;
    flagged_failed(&cluster, seed, victim_port).await;
    let flagged = now();
    let mut published = 0;
    // Passes every second for 5 s: a window to watch, not a wait.
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < until {
        let text = daemon.get("/metrics").await;
        if series(&text, last) > flagged {
            published += 1;
            assert_eq!(
                series(&text, chat),
                3000.0,
                "a pass published without a shard's keys"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("{published} looks at a pass published with the master failed");

    // Its replica dies too: nothing serves those slots, so no pass is
    // published, and the last complete one stays.
    cluster.nodes[replica].kill();
    let replica_port = cluster.nodes[replica].port;
    flagged_failed(&cluster, seed, replica_port).await;
    let stopped = now();
    // Three intervals in which a pass would have been published.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let text = daemon.get("/metrics").await;
    assert!(
        series(&text, last) < stopped,
        "a pass was published without a shard"
    );
    assert_eq!(series(&text, chat), 3000.0);
    let logs = daemon.stop();
    assert!(logs.contains("have no node to read"), "{logs}");
}

/// A master other than the seed's node, and its replica, by index.
fn shard_away_from(cluster: &Cluster, seed: u16) -> (usize, usize) {
    let nodes = cluster.nodes[0].cli(&["CLUSTER", "NODES"]);
    let index = |port: &str| {
        cluster
            .nodes
            .iter()
            .position(|n| n.port.to_string() == port)
            .unwrap()
    };
    let line = nodes
        .lines()
        .find(|l| l.contains("master") && !l.contains(&format!(":{seed}@")))
        .unwrap();
    let id = line.split_whitespace().next().unwrap();
    let port = |l: &str| {
        let addr = l.split_whitespace().nth(1).unwrap();
        addr.split('@')
            .next()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .to_owned()
    };
    let replica = nodes
        .lines()
        .find(|l| l.split_whitespace().nth(3) == Some(id))
        .unwrap();
    (index(&port(line)), index(&port(replica)))
}

/// Waits until the seed's `CLUSTER NODES` flags the node on `port` `fail`.
async fn flagged_failed(cluster: &Cluster, seed: u16, port: u16) {
    let seed = cluster.nodes.iter().find(|n| n.port == seed).unwrap();
    poll("the node flagged fail", Duration::from_secs(30), || async {
        let nodes = seed.cli(&["CLUSTER", "NODES"]);
        nodes
            .lines()
            .any(|l| {
                l.contains(&format!(":{port}@")) && l.contains(",fail") && !l.contains("fail?")
            })
            .then_some(())
    })
    .await;
}
