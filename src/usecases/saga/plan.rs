//! What a saga row holds (addendum §8.3): the write-ahead `plan` of undoable steps with their
//! targets, the `context` for events and logs, and the per-step `progress`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// The journaled use cases (`saga.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaKind {
    CreateLab,
    CreateProject,
    CreateCourse,
    AssignStudent,
}

impl SagaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SagaKind::CreateLab => "create_lab",
            SagaKind::CreateProject => "create_project",
            SagaKind::CreateCourse => "create_course",
            SagaKind::AssignStudent => "assign_student",
        }
    }

    pub fn parse(kind: &str) -> Option<Self> {
        serde_json::from_value(Value::String(kind.to_owned())).ok()
    }
}

/// One undoable step and what its undo acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", content = "target", rename_all = "snake_case")]
pub enum Step {
    SeatReservation { seat_id: Uuid, reservation_id: Uuid },
    KcCreateGroup { name: String },
    AccCreateProjectAccount { project_id: Uuid },
    AccCreateVlabAccount { vlab_id: Uuid },
    AccGrant { project_id: Uuid, amount: i64 },
    TemplateGrant { project_id: Uuid, amount: i64 },
}

/// A plan entry: `{"seq": 1, "step": "…", "target": {…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanStep {
    pub seq: u32,
    #[serde(flatten)]
    pub step: Step,
}

/// The ordered steps, numbered from 1, written once before the first external call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Plan(pub Vec<PlanStep>);

impl Plan {
    /// Appends a step and returns its `seq`.
    pub fn push(&mut self, step: Step) -> u32 {
        let seq = u32::try_from(self.0.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        self.0.push(PlanStep { seq, step });
        seq
    }

    pub fn steps(&self) -> &[PlanStep] {
        &self.0
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    pub fn from_json(value: &Value) -> Result<Self, serde_json::Error> {
        Plan::deserialize(value)
    }
}

/// Ids for events and logs; only what the unit of work knows is present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub course_id: Option<Uuid>,
    pub vlab_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seat_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub student_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_project_id: Option<Uuid>,
    #[serde(default)]
    pub request_id: Option<String>,
}

impl Context {
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// A step's entry in `progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// The forward path is about to create credits (written by the fence).
    Attempted,
    Undone,
    NothingToUndo,
    Failed,
}

impl StepState {
    /// Whether the compensation is finished with this step.
    pub fn is_settled(self) -> bool {
        matches!(self, StepState::Undone | StepState::NothingToUndo)
    }
}

/// `progress`: the state of each step by `seq`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Progress(pub BTreeMap<String, StepState>);

impl Progress {
    pub fn from_json(value: &Value) -> Self {
        Progress::deserialize(value).unwrap_or_default()
    }

    pub fn get(&self, seq: u32) -> Option<StepState> {
        self.0.get(&seq.to_string()).copied()
    }

    pub fn set(&mut self, seq: u32, state: StepState) {
        self.0.insert(seq.to_string(), state);
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_plan_is_written_as_the_spec_shows_it() {
        let (seat, run, project) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let mut plan = Plan::default();
        assert_eq!(
            plan.push(Step::SeatReservation {
                seat_id: seat,
                reservation_id: run
            }),
            1
        );
        plan.push(Step::KcCreateGroup {
            name: "proj/a/b/admin".to_owned(),
        });
        plan.push(Step::AccGrant {
            project_id: project,
            amount: 200,
        });
        let json = plan.to_json();
        assert_eq!(
            json,
            json!([
                {"seq": 1, "step": "seat_reservation", "target": {"seat_id": seat, "reservation_id": run}},
                {"seq": 2, "step": "kc_create_group", "target": {"name": "proj/a/b/admin"}},
                {"seq": 3, "step": "acc_grant", "target": {"project_id": project, "amount": 200}},
            ])
        );
        assert_eq!(Plan::from_json(&json).unwrap(), plan);
    }

    #[test]
    fn progress_reads_and_writes_states_by_seq() {
        let mut progress = Progress::from_json(&json!({"6": "attempted"}));
        assert_eq!(progress.get(6), Some(StepState::Attempted));
        progress.set(2, StepState::NothingToUndo);
        assert_eq!(
            progress.to_json(),
            json!({"2": "nothing_to_undo", "6": "attempted"})
        );
        assert!(!StepState::Failed.is_settled());
        assert_eq!(
            SagaKind::parse("assign_student"),
            Some(SagaKind::AssignStudent)
        );
        assert_eq!(SagaKind::parse("other"), None);
    }
}
