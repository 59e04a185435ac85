//! The census where replicas are named: a cluster (every master from the
//! canary's census, every replica from a module with `read_from =
//! "replica"`), and a replica the sentinels name (the master once there is
//! none).

use std::process::Command;
use std::time::Duration;

use crate::census::{pipe, quantile, CONFIG};
use crate::census_fleet::{calls, probe_until};
use crate::helpers::{poll, series, spawn_app_with_chroma, ChromaServer, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_census_of_a_cluster_counts_every_master_or_every_replica() {
    let cluster = crate::topologies::Cluster::start();
    let chroma = ChromaServer::start();
    let seed = &cluster.nodes[0];
    // Written through redis-cli -c, which follows MOVED: the keys spread
    // over the three masters by slot.
    let mut commands = String::new();
    let mut lengths = Vec::new();
    for i in 0..300u64 {
        let length = i % 20 + 1;
        commands.push_str(&format!("RPUSH message_store:{i}"));
        for m in 0..length {
            commands.push_str(&format!(" m{m}"));
        }
        commands.push('\n');
        lengths.push(length);
    }
    for i in 0..100 {
        commands.push_str(&format!("HSET session:{i} a 1 b 2\n"));
    }
    for i in 0..50 {
        commands.push_str(&format!("SET misc:{i} v\n"));
    }
    cluster.write(&commands);
    // The canary's census reads the masters; the module's, the replicas.
    let config = format!(
        "{CONFIG}[redis]\nmode = \"cluster\"\nurl = \"redis://127.0.0.1:{}\"\n\
         [probe.modules.cluster]\nprober = \"redis\"\nmode = \"cluster\"\n\
         allowed_targets = [\"127.0.0.1/32\"]\n\
         [probe.modules.cluster.census]\ninterval = \"1s\"\n\
         [probe.modules.cluster.census.redis]\nmax_keys_per_second = 0\nread_from = \"replica\"\n\
         [[probe.modules.cluster.census.redis.groups]]\nname = \"chat\"\npattern = \"message_store:*\"\n\
         [[probe.modules.cluster.census.redis.groups]]\nname = \"sessions\"\npattern = \"session:*\"\n\
         [[probe.modules.cluster.census.redis.groups]]\nname = \"probe\"\npattern = \"llmcache:*\"\n",
        seed.port
    );
    let (app, _dir) = spawn_app_with_chroma(&chroma, &config).await;
    let chat = r#"llmcache_census_redis_keys{group="chat"}"#;
    app.wait_for_metric(chat, 300.0, Duration::from_secs(30))
        .await;
    let text = app.metrics().await;
    let median = r#"llmcache_census_redis_length{group="chat",quantile="0.5"}"#;
    let sessions = r#"llmcache_census_redis_keys{group="sessions"}"#;
    let other = r#"llmcache_census_redis_keys{group="other"}"#;
    assert_eq!(series(&text, sessions), 100.0);
    assert_eq!(series(&text, other), 50.0);
    assert_eq!(series(&text, median), quantile(&mut lengths, 0.5) as f64);

    // Through the replicas: the same totals.
    let target = format!("127.0.0.1:{}", seed.port);
    let body = poll("the replicas' census", Duration::from_secs(30), || async {
        let body = probe_until(&app, &target, "cluster", chat).await;
        (series(&body, chat) == 300.0).then_some(body)
    })
    .await;
    assert_eq!(series(&body, sessions), 100.0);
    assert_eq!(series(&body, other), 50.0);
    assert_eq!(series(&body, median), series(&text, median));
    // Each replica served census reads (nothing else sends a replica SCAN
    // or TYPE).
    let replicas: Vec<&RedisServer> = cluster
        .nodes
        .iter()
        .filter(|n| n.cli(&["ROLE"]).starts_with("slave"))
        .collect();
    assert_eq!(replicas.len(), 3);
    for replica in replicas {
        assert!(
            calls(replica, "scan") > 0,
            "replica {} not read",
            replica.port
        );
        assert!(
            calls(replica, "type") > 0,
            "replica {} not read",
            replica.port
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_sentinel_mode_the_census_reads_a_replica_the_sentinels_name() {
    let master = RedisServer::start();
    let mut replica = RedisServer::start();
    replica.cli(&["REPLICAOF", "127.0.0.1", &master.port.to_string()]);
    let commands: String = (0..200)
        .map(|i| format!("RPUSH message_store:{i} a b c\n"))
        .collect();
    pipe(&master, &commands);
    poll("the replica's copy", Duration::from_secs(15), || async {
        (replica.cli(&["DBSIZE"]).trim() == "200").then_some(())
    })
    .await;
    let sentinel = crate::topologies::SentinelProcess::start(master.port);
    let sentinel_cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &sentinel.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    poll(
        "the sentinel to know the replica",
        Duration::from_secs(20),
        || async {
            sentinel_cli(&["SENTINEL", "REPLICAS", "mymaster"])
                .contains(&replica.port.to_string())
                .then_some(())
        },
    )
    .await;
    let chroma = ChromaServer::start();
    let config = format!(
        "[workload]\nrate = 1.0\n[workload.mix]\nget_chat_history = 1\nstore_chat_entry = 0\n\
         query_similar_memories = 0\nstore_memory = 0\n\
         [redis]\nmode = \"sentinel\"\nsentinel_master = \"mymaster\"\nurl = \"redis://127.0.0.1:{}\"\n\
         [census]\ninterval = \"2s\"\n[census.redis]\nmax_keys_per_second = 0\nread_from = \"replica\"\n\
         [[census.redis.groups]]\nname = \"chat\"\npattern = \"message_store:*\"\n",
        sentinel.port
    );
    let (app, _dir) = spawn_app_with_chroma(&chroma, &config).await;
    let chat = r#"llmcache_census_redis_keys{group="chat"}"#;
    app.wait_for_metric(chat, 200.0, Duration::from_secs(30))
        .await;
    let text = app.metrics().await;
    assert_eq!(
        series(
            &text,
            r#"llmcache_census_redis_length{group="chat",quantile="1"}"#
        ),
        3.0
    );
    // The replica served the census; the master (which the canary reads
    // from) saw none of it.
    assert!(calls(&replica, "scan") > 0 && calls(&replica, "type") > 0);
    assert_eq!(calls(&master, "scan"), 0);
    assert_eq!(calls(&master, "type"), 0);
    assert!(calls(&master, "lrange") > 0, "the canary reads the master");
    // The replica gone, the sentinels name none: the census reads the master.
    replica.kill();
    let text = poll(
        "a census of the master",
        Duration::from_secs(30),
        || async {
            (calls(&master, "scan") > 0).then_some(())?;
            let text = app.metrics().await;
            (series(&text, chat) == 200.0).then_some(text)
        },
    )
    .await;
    assert_eq!(
        series(
            &text,
            r#"llmcache_census_redis_keys_without_ttl{group="chat"}"#
        ),
        200.0
    );
    app.stop().await;
}
