//! The recovery threshold counts top-ups: `credits_per_seat + extra_credits − margin`, in the
//! drop and in its preview alike.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::json;
use sqlx::PgPool;

use super::admin_top_up;
use crate::fixtures::course_with_students;
use crate::helpers::{ReplyExt, TestApp, fetch_scalar};

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

#[sqlx::test]
async fn recovery_threshold_includes_top_ups(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = course_with_students(&app, "Recovery 101", 2).await;
    let (over, within) = (&students[0], &students[1]);
    for s in &students {
        admin_top_up(&app, course.course_id, s.enrolment_id, 100).await;
    }
    // 300 granted each; 60 spent is over the margin of 50 (240 would pass the old 150).
    app.accounting.spend(over.project_id, dec("60")).unwrap();
    app.accounting.spend(within.project_id, dec("40")).unwrap();

    let preview = app
        .as_faculty()
        .post(
            &format!("/seats/courses/{}/drop-preview", course.course_id),
            &json!({"seat_ids": [over.seat_id, within.seat_id]}),
        )
        .await
        .ok_body();
    let results = &preview["results"];
    assert_eq!(results[0]["seat_recovered"], false, "{preview}");
    assert_eq!(
        results[0]["recovery_blockers"],
        json!(["spent_over_margin"])
    );
    assert_eq!(results[0]["credits_granted"], json!(300.0));
    assert_eq!(results[0]["credits_spent"], json!(60.0));
    assert_eq!(results[1]["seat_recovered"], true, "{preview}");
    assert_eq!(results[1]["credits_granted"], json!(300.0));
    assert_eq!(results[1]["credits_spent"], json!(40.0));

    let drop = app
        .as_faculty()
        .post_drop(course.course_id, &[over.seat_id, within.seat_id])
        .await
        .ok_body();
    assert_eq!(drop["results"][0]["seat_recovered"], false, "{drop}");
    assert_eq!(drop["results"][1]["seat_recovered"], true, "{drop}");
    for (i, (s, left)) in [(over, 240.0), (within, 260.0)].into_iter().enumerate() {
        let depleted: Decimal = fetch_scalar(
            &app.db,
            "SELECT depleted_amount FROM enrolment_drop WHERE enrolment_id = $1",
            s.enrolment_id,
        )
        .await;
        assert_eq!(depleted, Decimal::try_from(left).unwrap());
        // The preview said so.
        assert_eq!(results[i]["credits_returned"], json!(left));
    }
}
