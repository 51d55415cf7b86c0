//! Compile-time facts about the public API (no server needed: a group connects lazily).

use std::time::Duration;

use singleflight_redis::{Call, Config, Error, FleetRole, RedisGroup, ResultWithRole, WithRole};

fn is_send<T: Send>(_: &T) {}

#[tokio::test]
async fn call_futures_are_send_with_send_work_and_say_what_they_resolve_to() {
    let group = RedisGroup::<u64, String>::open("redis://127.0.0.1:1/", Config::new("api"))
        .expect("a group opens without connecting");
    let call: Call<_> = group.call("k", || async { 1 });
    is_send(&call);
    // `Debug` without `V: Debug` or a `Debug` future.
    assert_eq!(format!("{call:?}"), "Call { .. }");
    let with_role: WithRole<_> = call.with_role();
    is_send(&with_role);
    drop(with_role); // never polled: nothing was registered, nothing reached Redis
    assert_eq!(group.in_flight(), 0);

    // Redis unreachable: the call still resolves, to the value, and its role says why.
    let config = Config::new("api").op_timeout(Duration::from_millis(50));
    let group = RedisGroup::<u64, String>::open("redis://127.0.0.1:1/", config).expect("group");
    let value: Result<u64, Error<String>> = group.try_call("k", || async { Ok(2) }).await;
    assert_eq!(value, Ok(2));
    let (value, role): ResultWithRole<u64, String> =
        group.try_call("k", || async { Ok(3) }).with_role().await;
    assert_eq!(value, Ok(3));
    assert!(matches!(role, Some(FleetRole::Fallback(_))), "{role:?}");
}
