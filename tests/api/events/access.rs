//! The access sync's events: one `access_update_failed` per failure streak, and nothing
//! granted when a drop wins the race (the removal that follows records itself).

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use sqlx::PgPool;
use vlab_courses::usecases::access::access_pass;
use vlab_emulators::{Fault, FaultAction};

use super::{EventRow, stored};
use crate::fixtures;
use crate::helpers::{ReplyExt, TestApp};
use crate::waitlist::{StalledAdds, claim, future_course, make_due, pass, start_course};

fn of_type<'e>(events: &'e [EventRow], event_type: &str) -> Vec<&'e EventRow> {
    events
        .iter()
        .filter(|e| e.event_type == event_type)
        .collect()
}

#[sqlx::test]
async fn access_sync_failure_writes_one_access_update_failed_per_streak(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, assigned) = fixtures::course_with_students(&app, "Streak", 1).await;
    let e = assigned[0].enrolment_id;
    app.keycloak
        .inject(Fault::new("kc_add_member", FaultAction::Status(500)).times(1000));
    claim(&app, &app.users.students[0], e).await;
    for _ in 0..2 {
        make_due(&app, e).await;
        assert_eq!(pass(&app).await.failed, 1);
    }
    app.keycloak.clear_faults();
    make_due(&app, e).await;
    assert_eq!(pass(&app).await.applied, 1);

    let events = stored(&db, course.course_id).await;
    let failed = of_type(&events, "access_update_failed");
    assert_eq!(failed.len(), 1, "{events:#?}");
    assert_eq!(
        failed[0].actor_role, "student",
        "the claim's sync started the streak"
    );
    assert_eq!(failed[0].data["target"], "member");
    assert_eq!(failed[0].data["attempts"], 1);
    let granted = of_type(&events, "access_granted");
    assert_eq!(granted.len(), 1);
    assert_eq!(granted[0].actor_role, "system");
    assert_eq!(granted[0].data, json!({"trigger": "worker"}));
    assert_eq!(
        granted[0].after_values,
        Some(json!({"access_level": "member"}))
    );

    // A new streak after a success is recorded again.
    app.keycloak
        .inject(Fault::new("kc_add_member", FaultAction::Status(500)).times(1000));
    sqlx::query("UPDATE course_enrolment SET access_level = 'none' WHERE id = $1")
        .bind(e)
        .execute(&db)
        .await
        .unwrap();
    make_due(&app, e).await;
    assert_eq!(pass(&app).await.failed, 1);
    let events = stored(&db, course.course_id).await;
    assert_eq!(of_type(&events, "access_update_failed").len(), 2);
}

#[sqlx::test]
async fn access_sync_lost_to_a_drop_writes_no_access_granted(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, assigned) = future_course(&app, "Lost", 1).await;
    let stu = &assigned[0];
    claim(&app, &app.users.students[0], stu.enrolment_id).await;
    start_course(&app, course.course_id).await;

    // The promotion's additions are in flight when the faculty drop settles and removes access.
    let stall = StalledAdds::start(&app, Duration::from_millis(1500));
    let promotion = {
        let services = app.services();
        tokio::spawn(async move { access_pass(&services, Utc::now(), 50).await })
    };
    stall.in_flight().await;
    app.as_faculty()
        .post_drop(course.course_id, &[stu.seat_id])
        .await
        .ok_body();
    let promoted = promotion.await.unwrap().expect("access pass");
    drop(stall);
    assert_eq!((promoted.leased, promoted.applied), (1, 0));

    let events = stored(&db, course.course_id).await;
    let granted = of_type(&events, "access_granted");
    assert_eq!(
        granted.len(),
        1,
        "only the claim's waitlisting: {events:#?}"
    );
    assert_eq!(granted[0].data, json!({"trigger": "claim"}));
    // The drop's own removal, then the one the lost sync re-opened, each recorded.
    let removed = of_type(&events, "access_removed");
    assert_eq!(removed.len(), 2, "{events:#?}");
    assert_eq!(removed[0].actor_role, "course_admin");
    assert_eq!(
        removed[0].before_values,
        Some(json!({"access_level": "waitlisted"}))
    );
    assert_eq!(removed[1].actor_role, "system");
    for r in removed {
        assert_eq!(r.after_values, Some(json!({"access_level": "none"})));
    }
    assert_eq!(of_type(&events, "enrolment_dropped").len(), 1);
}
