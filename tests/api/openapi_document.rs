//! The OpenAPI document itself: the error body on every error answer, 401/403 on gated
//! operations, UUID path ids, examples on request bodies, the content types really sent.

use serde_json::Value;
use vlab_courses::http::openapi;

fn document() -> Value {
    serde_json::from_str(&openapi::document_json()).expect("the document is JSON")
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Every operation as (method, path, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                out.push((method.to_owned(), path.clone(), op.clone()));
            }
        }
    }
    out
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    // An optional body is documented as `oneOf: [null, T]`.
    if let Some(t) = schema["oneOf"]
        .as_array()
        .and_then(|alternatives| alternatives.iter().find(|a| a.get("$ref").is_some()))
    {
        return resolve(doc, t);
    }
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.trim_start_matches("#/components/schemas/");
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

#[test]
fn every_error_answer_carries_the_error_body_schema() {
    let doc = document();
    let body = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(
        body["required"],
        serde_json::json!(["error_code", "message", "details", "data"])
    );
    assert!(
        body["properties"]["error_code"]["enum"]
            .as_array()
            .is_some_and(|codes| codes.contains(&Value::from("ENTITY_NOT_FOUND")))
    );
    let mut errors = 0;
    for (method, path, op) in operations(&doc) {
        for (status, response) in op["responses"].as_object().expect("responses") {
            if !(status.starts_with('4') || status.starts_with('5')) {
                continue;
            }
            if path == "/ready" && status == "503" {
                // The one exception of api.md: the readiness body.
                continue;
            }
            errors += 1;
            let schema = &response["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(
                schema, "#/components/schemas/ErrorBody",
                "{method} {path} {status}"
            );
            assert!(
                !response["description"].as_str().unwrap_or("").is_empty(),
                "{method} {path} {status} has no description"
            );
        }
    }
    assert!(errors > 100, "only {errors} error answers");
}

#[test]
fn gated_operations_declare_401_and_403() {
    // Tier AU only: any valid token passes; no 403 can come from a gate.
    let token_only = [
        ("get", "/virtual-labs"),
        ("get", "/invites"),
        ("post", "/invites"),
        ("post", "/courses/claim"),
        ("post", "/courses/activate-enrolments"),
        ("post", "/courses/{course_id}/enrolment/activate"),
    ];
    let mut secured = 0;
    for (method, path, op) in operations(&document()) {
        let has_security = op["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
        if path == "/"
            || ["/health", "/ready", "/metrics", "/openapi.json"].contains(&path.as_str())
        {
            assert!(!has_security, "{method} {path} needs no token");
            continue;
        }
        assert!(has_security, "{method} {path} has no bearer security");
        secured += 1;
        let responses = &op["responses"];
        assert!(responses.get("401").is_some(), "{method} {path}: no 401");
        if !token_only.contains(&(method.as_str(), path.as_str())) {
            assert!(responses.get("403").is_some(), "{method} {path}: no 403");
        }
    }
    assert_eq!(secured, 45);
}

#[test]
fn only_the_plural_activation_is_deprecated_and_it_names_its_successor() {
    let deprecated: Vec<(String, String)> = operations(&document())
        .into_iter()
        .filter(|(_, _, op)| op["deprecated"] == true)
        .map(|(method, path, _)| (method, path))
        .collect();
    assert_eq!(
        deprecated,
        [("post".to_owned(), "/courses/activate-enrolments".to_owned())]
    );
    let doc = document();
    let plural = &doc["paths"]["/courses/activate-enrolments"]["post"];
    let text = format!("{} {}", plural["summary"], plural["description"]);
    assert!(
        text.contains("POST /courses/{course_id}/enrolment/activate"),
        "{text}"
    );
}

#[test]
fn path_ids_are_uuids() {
    let mut ids = 0;
    for (method, path, op) in operations(&document()) {
        for param in op["parameters"].as_array().into_iter().flatten() {
            if param["in"] != "path" {
                continue;
            }
            ids += 1;
            assert_eq!(param["required"], true, "{method} {path}");
            assert_eq!(param["schema"]["type"], "string", "{method} {path}");
            assert_eq!(param["schema"]["format"], "uuid", "{method} {path}");
        }
    }
    assert!(ids >= 20, "only {ids} path ids");
}

#[test]
fn request_bodies_have_examples_that_their_limits_admit() {
    let doc = document();
    let mut bodies = 0;
    for (method, path, op) in operations(&doc) {
        let Some(body) = op.get("requestBody") else {
            continue;
        };
        bodies += 1;
        let schema = resolve(&doc, &body["content"]["application/json"]["schema"]);
        let example = schema["example"].as_object();
        assert!(example.is_some(), "{method} {path}: no example");
        for key in example.into_iter().flat_map(|e| e.keys()) {
            assert!(
                schema["properties"].get(key).is_some(),
                "{method} {path}: example key {key} is not a property"
            );
        }
    }
    assert_eq!(bodies, 20);
}

#[test]
fn limits_are_in_the_schemas() {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    let name = &schemas["InstitutionCreate"]["properties"]["name"];
    assert_eq!(name["minLength"], 1);
    assert_eq!(name["maxLength"], 250);
    let seats = &schemas["ProvisionRequest"]["properties"]["number_of_seats"];
    assert_eq!(
        (seats["minimum"].as_f64(), seats["maximum"].as_f64()),
        (Some(1.0), Some(100.0))
    );
    let top_up = &schemas["TopUpBody"]["properties"];
    assert_eq!(
        (
            top_up["amount"]["minimum"].as_f64(),
            top_up["amount"]["maximum"].as_f64()
        ),
        (Some(1.0), Some(10_000.0))
    );
    assert_eq!(top_up["note"]["maxLength"], 500);
    assert_eq!(
        schemas["VirtualLabCreate"]["properties"]["compute_cell"]["enum"],
        serde_json::json!(["cell_a", "cell_b"])
    );
    let end = &schemas["CourseUpdate"]["properties"]["end_date"];
    assert_eq!(end["format"], "date-time");
    assert_eq!(
        end["type"],
        serde_json::json!(["string", "null"]),
        "a null clears it"
    );
    // A PATCH key whose null is rejected is not nullable.
    assert_eq!(
        schemas["CourseUpdate"]["properties"]["institution_id"]["type"],
        "string"
    );
    let page_size = doc["paths"]["/virtual-labs"]["get"]["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "page_size"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(page_size["schema"]["maximum"].as_f64(), Some(100.0));
}

#[test]
fn json_answers_are_documented_as_json() {
    let doc = document();
    for path in ["/", "/health"] {
        let content = &doc["paths"][path]["get"]["responses"]["200"]["content"];
        assert!(
            content.get("application/json").is_some(),
            "{path}: {content}"
        );
        assert!(content.get("text/plain").is_none(), "{path}: {content}");
    }
    let metrics = &doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"];
    assert!(metrics.get("text/plain; version=0.0.4").is_some());
}

#[test]
fn assign_and_import_declare_the_idempotency_key_header() {
    let mut keyed = Vec::new();
    for (method, path, op) in operations(&document()) {
        for param in op["parameters"].as_array().into_iter().flatten() {
            if param["name"] == "Idempotency-Key" {
                assert_eq!(param["in"], "header", "{method} {path}");
                assert_ne!(param["required"], true, "{method} {path}");
                assert_eq!(param["schema"]["type"], "string", "{method} {path}");
                assert!(
                    param["description"]
                        .as_str()
                        .is_some_and(|d| d.contains("24 hours")),
                    "{method} {path}"
                );
                keyed.push(format!("{method} {path}"));
            }
        }
    }
    keyed.sort();
    assert_eq!(
        keyed,
        [
            "post /seats/courses/{course_id}/assign",
            "post /seats/courses/{course_id}/roster-import"
        ]
    );
}
