//! The claim scripts against a real Redis (testkit's `redis-server` on a free port): many
//! sweepers racing for one due end, one delivery attempt, and the deleted-meeting case.

use std::collections::BTreeMap;

use earshot_meetings::{Sweeper, SweeperConfig};
use earshot_protocol::meeting_end::{join_call, leave_call, MEETING_RECORD_TTL_MS, PENDING_ENDS_KEY};
use earshot_protocol::{MeetingId, Source};
use earshot_testkit::RedisServer;

async fn run(conn: &mut redis::aio::ConnectionManager, call: &earshot_protocol::meeting_end::ScriptCall) -> i64 {
    redis::cmd("EVAL").arg(call.script).arg(call.keys.len()).arg(&call.keys).arg(&call.args).query_async(conn).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_sweepers_racing_for_one_due_end_announce_it_once() {
    let redis = RedisServer::start().unwrap();
    let meeting = MeetingId::parse("race").unwrap();
    let sweepers: Vec<Sweeper> = (0..20).map(|_| Sweeper::new(SweeperConfig::new(redis.url())).unwrap()).collect();
    let mut conn = sweepers[0].connection().await.unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    run(&mut conn, &join_call(&meeting, "c1", now - 5_000)).await;
    // Left 10 ms of grace ago: due.
    assert_eq!(run(&mut conn, &leave_call(&meeting, Source::Mic, "c1", now - 20, 10, 60_000)).await, 1);

    let mut tasks = Vec::new();
    for sweeper in sweepers {
        tasks.push(tokio::spawn(async move {
            let mut conn = sweeper.connection().await.unwrap();
            sweeper.sweep_ends(&mut conn).await.unwrap().len()
        }));
    }
    let mut ended = 0;
    for t in tasks {
        ended += t.await.unwrap();
    }
    assert_eq!(ended, 1, "exactly one of twenty sweepers ended the meeting");
    let marker: Option<String> = redis::cmd("GET").arg("earshot:meeting:race:ended").query_async(&mut conn).await.unwrap();
    assert!(marker.is_some());
    let ttl: i64 = redis::cmd("PTTL").arg("earshot:meeting:race:ended").query_async(&mut conn).await.unwrap();
    assert!(ttl > 0 && ttl as u64 <= MEETING_RECORD_TTL_MS);
    let pending: u64 = redis::cmd("ZCARD").arg(PENDING_ENDS_KEY).query_async(&mut conn).await.unwrap();
    assert_eq!(pending, 0);

    // A later leave of the ended meeting schedules nothing: it ends once.
    run(&mut conn, &join_call(&meeting, "c2", now)).await;
    assert_eq!(run(&mut conn, &leave_call(&meeting, Source::Mic, "c2", now, 0, 60_000)).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_end_not_yet_due_or_of_a_deleted_meeting_is_not_announced() {
    let redis = RedisServer::start().unwrap();
    let sweeper = Sweeper::new(SweeperConfig::new(redis.url())).unwrap();
    let mut conn = sweeper.connection().await.unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let later = MeetingId::parse("later").unwrap();
    run(&mut conn, &join_call(&later, "c1", now)).await;
    run(&mut conn, &leave_call(&later, Source::Sys, "c1", now, 60_000, 60_000)).await;
    assert!(sweeper.sweep_ends(&mut conn).await.unwrap().is_empty(), "a minute of grace left");

    // A pending end whose meeting records are gone (deleted meanwhile) is dropped silently.
    let _: () = redis::cmd("ZADD").arg(PENDING_ENDS_KEY).arg(now - 1).arg("gone").query_async(&mut conn).await.unwrap();
    assert!(sweeper.sweep_ends(&mut conn).await.unwrap().is_empty());
    let members: BTreeMap<String, f64> =
        redis::cmd("ZRANGE").arg(PENDING_ENDS_KEY).arg(0).arg(-1).arg("WITHSCORES").query_async(&mut conn).await.unwrap();
    assert_eq!(members.keys().collect::<Vec<_>>(), vec!["later"]);
    let gone: i64 = redis::cmd("EXISTS").arg("earshot:meeting:gone:ended").query_async(&mut conn).await.unwrap();
    assert_eq!(gone, 0);
}
