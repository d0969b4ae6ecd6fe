//! Upgrading a database that holds round-1 enrolments (W.2.3, W.7 29): the rows are written
//! with only the earlier migrations applied, then `0002_waitlist.sql` runs, then the new code
//! converges them.

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;
use uuid::Uuid;
use vlab_courses::repo::db::MIGRATOR;

use super::{access, pass};
use crate::helpers::{TestApp, migrate_before};

async fn migrate_to_latest(db: &PgPool) {
    MIGRATOR.run(db).await.expect("the waitlist migration");
}

/// The Keycloak group ids a round-1 lab and its student projects had.
struct LabGroups {
    lab_member: String,
    /// The member group of each student project, in order.
    project_members: Vec<String>,
}

/// A round-1 enrolment of a seeded course.
struct Row {
    claimed_by: Option<Uuid>,
    activated: bool,
    dropped: bool,
}

/// A course lab with its template, an active course starting at `start`, and one student
/// project and enrolment per row, written with round-1 columns only. Returns the course id and
/// the `(enrolment, project)` ids.
async fn seed_course(
    db: &PgPool,
    groups: &LabGroups,
    start: DateTime<Utc>,
    rows: &[Row],
) -> (Uuid, Uuid, Vec<(Uuid, Uuid)>) {
    let (lab, template, course) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let owner = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO virtual_lab (id, owner_id, name, entity, admin_group_id, member_group_id,
             is_course)
         VALUES ($1, $2, $3, 'OBI', $4, $5, true)",
    )
    .bind(lab)
    .bind(owner)
    .bind(format!("Round one {lab}"))
    .bind(format!("admin-{lab}"))
    .bind(&groups.lab_member)
    .execute(db)
    .await
    .unwrap();
    insert_project(
        db,
        template,
        lab,
        "Template",
        owner,
        &format!("member-{template}"),
    )
    .await;
    sqlx::query(
        "INSERT INTO course (id, virtual_lab_id, institution_id, template_project_id, start_date,
             end_date, last_drop_date, status, credits_per_seat)
         SELECT $1, $2, id, $3, $4, now() + interval '90 days', now() + interval '30 days',
                'active', 100
         FROM institution WHERE name = 'Open Brain Institute'",
    )
    .bind(course)
    .bind(lab)
    .bind(template)
    .bind(start)
    .execute(db)
    .await
    .unwrap();
    let mut ids = Vec::new();
    for (i, (row, member_group)) in rows.iter().zip(&groups.project_members).enumerate() {
        let (enrolment, project) = (Uuid::new_v4(), Uuid::new_v4());
        insert_project(db, project, lab, &format!("stu-{i}"), owner, member_group).await;
        sqlx::query(
            "INSERT INTO course_enrolment (id, course_id, project_id, contact_email, student_id,
                 claimed_by, is_dropped, activated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $8 THEN now() END)",
        )
        .bind(enrolment)
        .bind(course)
        .bind(project)
        .bind(format!("stu-{i}@uni.org"))
        .bind(format!("stu-{i}"))
        .bind(row.claimed_by)
        .bind(row.dropped)
        .bind(row.activated)
        .execute(db)
        .await
        .unwrap();
        if row.dropped {
            sqlx::query(
                "INSERT INTO enrolment_drop (enrolment_id, course_id, project_id, reason,
                     requested_at, is_early, state, seat_recovered, dropped_at, access_removed_at)
                 VALUES ($1, $2, $3, 'faculty', now(), true, 'done', true, now(), now())",
            )
            .bind(enrolment)
            .bind(course)
            .bind(project)
            .execute(db)
            .await
            .unwrap();
        }
        ids.push((enrolment, project));
    }
    (course, lab, ids)
}

async fn insert_project(
    db: &PgPool,
    id: Uuid,
    lab: Uuid,
    name: &str,
    owner: Uuid,
    member_group: &str,
) {
    sqlx::query(
        "INSERT INTO project (id, virtual_lab_id, name, owner_id, admin_group_id, member_group_id)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(lab)
    .bind(name)
    .bind(owner)
    .bind(format!("admin-{id}"))
    .bind(member_group)
    .execute(db)
    .await
    .unwrap();
}

fn placeholder_groups(n: usize) -> LabGroups {
    LabGroups {
        lab_member: format!("member-{}", Uuid::new_v4()),
        project_members: (0..n)
            .map(|_| format!("member-{}", Uuid::new_v4()))
            .collect(),
    }
}

async fn level(db: &PgPool, enrolment: Uuid) -> String {
    sqlx::query_scalar("SELECT access_level FROM course_enrolment WHERE id = $1")
        .bind(enrolment)
        .fetch_one(db)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn the_migration_marks_activated_enrolments_member_and_leaves_the_rest_none(db: PgPool) {
    migrate_before(&db, "waitlist").await;
    let now = Utc::now();
    let (u1, u2, u3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let rows = [
        Row {
            claimed_by: None,
            activated: false,
            dropped: false,
        },
        Row {
            claimed_by: Some(u1),
            activated: false,
            dropped: false,
        },
        Row {
            claimed_by: Some(u2),
            activated: true,
            dropped: false,
        },
        Row {
            claimed_by: Some(u3),
            activated: true,
            dropped: true,
        },
    ];
    let (_, _, ids) =
        seed_course(&db, &placeholder_groups(4), now - TimeDelta::days(1), &rows).await;
    migrate_to_latest(&db).await;

    let levels = futures::future::join_all(ids.iter().map(|(e, _)| level(&db, *e))).await;
    assert_eq!(levels, ["none", "none", "member", "none"]);
    let untouched: (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE access_attempts = 0 AND access_lease_id IS NULL
                                  AND access_next_attempt_at IS NULL),
                (SELECT count(*) FROM project WHERE waitlisted_group_id IS NOT NULL)
         FROM course_enrolment",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(untouched, (4, 0));
}

#[sqlx::test(migrations = false)]
async fn round_one_enrolments_converge_after_one_worker_pass(db: PgPool) {
    migrate_before(&db, "waitlist").await;
    // The server starts on the old schema, as during a rolling update.
    let app = TestApp::spawn(db.clone()).await;
    let kc = app.services().keycloak;
    let students = app.users.students.clone();
    let mut groups = Vec::new();
    for _ in 0..2 {
        let lab = format!("vlab/{}/member", Uuid::new_v4());
        let projects = [Uuid::new_v4(), Uuid::new_v4()];
        let mut project_members = Vec::new();
        for p in projects {
            project_members.push(
                kc.create_group(&format!("proj/x/{p}/member"))
                    .await
                    .unwrap(),
            );
        }
        groups.push(LabGroups {
            lab_member: kc.create_group(&lab).await.unwrap(),
            project_members,
        });
    }
    let now = Utc::now();
    // Claimed before the start, never activated.
    let (_, future_lab, future) = seed_course(
        &db,
        &groups[0],
        now + TimeDelta::days(7),
        &[Row {
            claimed_by: Some(students[0].id),
            activated: false,
            dropped: false,
        }],
    )
    .await;
    // Claimed after the start: one not activated, one activated.
    let (_, _, started) = seed_course(
        &db,
        &groups[1],
        now - TimeDelta::days(1),
        &[
            Row {
                claimed_by: Some(students[1].id),
                activated: false,
                dropped: false,
            },
            Row {
                claimed_by: Some(students[2].id),
                activated: true,
                dropped: false,
            },
        ],
    )
    .await;
    migrate_to_latest(&db).await;
    assert_eq!(access(&app, started[1].0).await.access_level, "member");

    // The start-up pass of the server may have got there first; either way one sync each.
    for _ in 0..20 {
        pass(&app).await;
        if level(&db, future[0].0).await == "waitlisted"
            && level(&db, started[0].0).await == "member"
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let waitlisted_group: Option<String> =
        sqlx::query_scalar("SELECT waitlisted_group_id FROM project WHERE id = $1")
            .bind(future[0].1)
            .fetch_one(&db)
            .await
            .unwrap();
    let name = format!("proj/{future_lab}/{}/waitlisted", future[0].1);
    let created = app
        .keycloak
        .group_by_name(&name)
        .expect("created on the way");
    assert_eq!(waitlisted_group, Some(created.id));
    assert_eq!(level(&db, future[0].0).await, "waitlisted");
    assert!(created.members.contains(&students[0].id));
    assert_eq!(level(&db, started[0].0).await, "member");
    let paths = app.keycloak.user_group_paths(students[1].id);
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert_eq!(access(&app, started[0].0).await.activated_at, None);

    // The activated student's first activation call is already recorded.
    let body = app.as_user(&students[2]).activate_enrolments().await;
    assert_eq!(body.1["results"], serde_json::json!([]));
}
