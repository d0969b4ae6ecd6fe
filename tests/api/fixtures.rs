//! Scenario builders over the HTTP API, shared by the test modules. Each builder asserts the
//! success of the calls it makes, so a failing set-up fails loudly where it happens.

#![allow(dead_code)]

// ---- virtual labs and projects (issue 3)

// ---- courses (issue 4)

// ---- seats and enrolments (issue 5)
