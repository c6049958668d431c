//! The OpenAPI document: what the handlers' annotations say, made complete
//! by rules that hold for every operation, so that the document tells the
//! truth (Schemathesis checks it against the running API in `make test`):
//!
//! - every error is `application/problem+json` with the `Problem` schema;
//! - the statuses every operation shares are listed on each: 400 for an
//!   unreadable path, query or body, 401 where a token is needed, 413/415/422
//!   where a body is read, 503 wherever the database is used;
//! - optional query parameters are optional, not "nullable" (a query string
//!   cannot carry a null);
//! - operation ids are unique;
//! - links let a client (or a fuzzer) go from a new category to a menu item,
//!   an order, and along the order's life to `delivered`.

use serde_json::{Map, Value, json};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::error::PROBLEM_JSON;

#[derive(OpenApi)]
#[openapi(
    info(title = "FoodApp ordering API", description = "Menu, cart and orders for customers, kitchen staff, couriers and managers. Errors are RFC 9457 problem documents (`application/problem+json`) with a stable `code`; every 503 carries `Retry-After`."),
    modifiers(&BearerAuth),
    components(schemas(crate::catalog::items::Sort)),
    tags(
        (name = "auth", description = "Accounts and tokens"),
        (name = "users", description = "Profiles and roles"),
        (name = "catalog", description = "Categories and menu items"),
        (name = "cart", description = "The customer's cart"),
        (name = "orders", description = "Placing, moving along and following orders"),
        (name = "refunds", description = "Refunds of rejected and cancelled orders"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Operations that never touch the database.
const NO_DATABASE: &[&str] = &["/healthz", "/metrics"];

/// Signed-in operations open to every role (the rest answer 403 to roles
/// they are not for).
const ANY_ROLE: &[(&str, &str)] = &[
    ("get", "/api/v1/users/me"),
    ("get", "/api/v1/orders"),
    ("get", "/api/v1/orders/{id}"),
    ("get", "/api/v1/orders/{id}/events"),
];

/// Applies the rules above, on the document as JSON, where they are
/// easiest to state.
pub fn refine(doc: utoipa::openapi::OpenApi) -> Value {
    let mut v = serde_json::to_value(&doc).expect("the OpenAPI document serializes");
    refine_json(&mut v);
    v
}

fn refine_json(doc: &mut Value) {
    unique_operation_ids(doc);
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, operation) in item.iter_mut() {
            let Some(operation) = operation.as_object_mut() else {
                continue;
            };
            optional_not_nullable(operation);
            shared_errors(method, path, operation);
            problems_as_problem_json(operation);
        }
    }
    links(doc);
    exclusive_choices(doc);
    event_stream(doc);
}

/// Each event of an order's stream: `event: status`, its `id`, and JSON
/// `data` holding a `StatusChange` (Open API 3.1 reads `schema` of an event
/// stream as the schema of one event).
fn event_stream(doc: &mut Value) {
    let stream = &mut doc["paths"]["/api/v1/orders/{id}/events"]["get"]["responses"]["200"]["content"]
        ["text/event-stream"];
    if stream.is_object() {
        stream["schema"] = json!({
            "type": "object",
            "properties": {
                "event": {"type": "string", "enum": ["status"]},
                "id": {"type": "string", "pattern": "^[0-9]+$"},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {"$ref": "#/components/schemas/StatusChange"}
                }
            },
            "required": ["event", "id", "data"]
        });
    }
}

/// Request shapes serde checks in code that the derived schemas cannot say:
/// an order is either items or the cart; card and wallet payments carry a
/// token, cash payments none.
fn exclusive_choices(doc: &mut Value) {
    let schemas = &mut doc["components"]["schemas"];
    let line = json!({"$ref": "#/components/schemas/LineRequest"});
    let payment = json!({"$ref": "#/components/schemas/PaymentRequest"});
    schemas["PlaceOrder"] = json!({
        "description": "Either `items` (1 to 50 lines) or `from_cart: true`, and the payment.",
        "oneOf": [
            {
                "title": "Items",
                "type": "object",
                "properties": {
                    "items": {"type": "array", "items": line, "minItems": 1, "maxItems": 50},
                    "from_cart": {"type": "boolean", "enum": [false]},
                    "payment": payment
                },
                "required": ["items", "payment"],
                "additionalProperties": false
            },
            {
                "title": "Cart",
                "type": "object",
                "properties": {
                    "from_cart": {"type": "boolean", "enum": [true], "description": "Order the caller's cart (and empty it)."},
                    "payment": payment
                },
                "required": ["from_cart", "payment"],
                "additionalProperties": false
            }
        ]
    });
    schemas["PaymentRequest"] = json!({
        "description": "How the order is paid. The mock provider declines the token `tok_declined` (402).",
        "oneOf": [
            {
                "title": "Card or wallet",
                "type": "object",
                "properties": {
                    "method": {"type": "string", "enum": ["card", "wallet"]},
                    "token": {"type": "string", "minLength": 1, "maxLength": 200,
                              "description": "The payment provider's token for this payment."}
                },
                "required": ["method", "token"],
                "additionalProperties": false
            },
            {
                "title": "Cash",
                "type": "object",
                "properties": {"method": {"type": "string", "enum": ["cash"]}},
                "required": ["method"],
                "additionalProperties": false
            }
        ]
    });
}

/// utoipa names operations after their functions: `list`, `create`… in
/// several modules. Repeated ones get the resource's name appended.
fn unique_operation_ids(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for item in paths.values() {
        for op in item.as_object().into_iter().flat_map(|i| i.values()) {
            if let Some(id) = op.get("operationId").and_then(Value::as_str) {
                *seen.entry(id.to_owned()).or_default() += 1;
            }
        }
    }
    for (path, item) in paths.iter_mut() {
        let resource = path
            .trim_start_matches("/api/v1/")
            .split('/')
            .next()
            .unwrap_or("")
            .replace('-', "_");
        for op in item
            .as_object_mut()
            .into_iter()
            .flat_map(|i| i.values_mut())
        {
            let Some(id) = op.get("operationId").and_then(Value::as_str) else {
                continue;
            };
            if seen.get(id).copied().unwrap_or(0) > 1 {
                let unique = format!("{id}_{resource}");
                op["operationId"] = Value::String(unique);
            }
        }
    }
}

/// `Option<T>` query parameters come out as `T | null`; a query string has
/// no null, so the parameter is simply optional.
fn optional_not_nullable(operation: &mut Map<String, Value>) {
    let Some(params) = operation
        .get_mut("parameters")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for p in params {
        if p["in"] == "path" {
            continue;
        }
        let Some(schema) = p.get_mut("schema") else {
            continue;
        };
        if let Some(types) = schema.get_mut("type").and_then(Value::as_array_mut) {
            types.retain(|t| t != "null");
            if types.len() == 1 {
                let only = types[0].clone();
                schema["type"] = only;
            }
        }
        let single = schema
            .get_mut("oneOf")
            .and_then(Value::as_array_mut)
            .and_then(|alts| {
                alts.retain(|a| a.get("type") != Some(&json!("null")));
                (alts.len() == 1).then(|| alts[0].clone())
            });
        if let Some(single) = single {
            *schema = single;
        }
    }
}

fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": { PROBLEM_JSON: { "schema": { "$ref": "#/components/schemas/Problem" } } }
    })
}

/// Adds the statuses every operation of a kind can return, unless the
/// handler documents them itself.
fn shared_errors(method: &str, path: &str, operation: &mut Map<String, Value>) {
    let params: Vec<Value> = operation
        .get("parameters")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has = |place: &str| params.iter().any(|p| p["in"] == place);
    let body = operation.contains_key("requestBody");
    let secured = operation
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    let streams = path.ends_with("/events");
    let mut add = Vec::new();
    if has("path") || has("query") || has("header") || body {
        add.push((
            "400",
            "bad_request, invalid_path, invalid_query, invalid_cursor or malformed_json: the request cannot be read",
        ));
    }
    if secured {
        add.push((
            "401",
            "unauthorized: no token, or an invalid or expired one",
        ));
        if !ANY_ROLE.contains(&(method, path)) {
            add.push(("403", "forbidden: the caller's roles do not allow this"));
        }
    }
    if has("path") {
        add.push(("404", "not_found"));
    }
    if body {
        add.push(("413", "payload_too_large"));
        add.push((
            "415",
            "unsupported_media_type: the body must be application/json",
        ));
    }
    if body || has("query") {
        add.push((
            "422",
            "validation_failed: a value is outside what the schema allows",
        ));
    }
    if !NO_DATABASE.contains(&path) || streams {
        add.push((
            "503",
            "unavailable: the database is away or busy; restoring: writes pause for the seconds a restore or upgrade switches databases; retry after `Retry-After` seconds",
        ));
    }
    let responses = operation
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("responses is an object");
    for (status, description) in add {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| problem(description));
    }
    if let Some(unavailable) = responses.get_mut("503") {
        unavailable["headers"] = json!({
            "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
        });
    }
}

/// Error bodies are problem documents: the media type says so.
fn problems_as_problem_json(operation: &mut Map<String, Value>) {
    let Some(responses) = operation
        .get_mut("responses")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (status, response) in responses.iter_mut() {
        if !status.starts_with('4') && !status.starts_with('5') {
            continue;
        }
        let Some(content) = response.get_mut("content").and_then(Value::as_object_mut) else {
            *response = problem(response["description"].as_str().unwrap_or(""));
            continue;
        };
        if let Some(json) = content.remove("application/json") {
            content.insert(PROBLEM_JSON.to_owned(), json);
        }
    }
}

/// The links that carry a new category to a delivered order.
fn links(doc: &mut Value) {
    let id = json!({"id": "$response.body#/id"});
    let by_id = |op: &str| json!({"operationId": op, "parameters": id.clone()});
    let rules: Vec<(&str, &str, &str, Value)> = vec![
        (
            "create_categories",
            "201",
            "GetCategory",
            by_id("get_one_categories"),
        ),
        (
            "create_categories",
            "201",
            "AddMenuItem",
            json!({
                "operationId": "create_menu_items",
                "requestBody": {"category_id": "$response.body#/id"}
            }),
        ),
        (
            "create_menu_items",
            "201",
            "GetMenuItem",
            by_id("get_one_menu_items"),
        ),
        (
            "create_menu_items",
            "201",
            "UpdateMenuItem",
            by_id("update_menu_items"),
        ),
        (
            "create_menu_items",
            "201",
            "PutInCart",
            json!({
                "operationId": "set_item",
                "parameters": {"menu_item_id": "$response.body#/id"}
            }),
        ),
        (
            "create_menu_items",
            "201",
            "OrderIt",
            json!({
                "operationId": "create_orders",
                "requestBody": {
                    "items": [{"menu_item_id": "$response.body#/id", "quantity": 1}],
                    "payment": {"method": "card", "token": "tok_link"}
                }
            }),
        ),
        ("create_orders", "201", "GetOrder", by_id("get_one_orders")),
        ("create_orders", "201", "Accept", by_id("accept")),
        ("create_orders", "201", "Reject", by_id("reject")),
        ("create_orders", "201", "Cancel", by_id("cancel")),
        ("accept", "200", "Ready", by_id("ready")),
        // The customer here is also a courier: the fuzzer's all-roles account.
        (
            "ready",
            "200",
            "AssignToCustomer",
            json!({
                "operationId": "assign",
                "parameters": id.clone(),
                "requestBody": {"courier_id": "$response.body#/customer_id"}
            }),
        ),
        ("assign", "200", "Pickup", by_id("pickup")),
        ("pickup", "200", "Deliver", by_id("deliver")),
    ];
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut() {
        for op in item
            .as_object_mut()
            .into_iter()
            .flat_map(|i| i.values_mut())
        {
            let Some(op_id) = op
                .get("operationId")
                .and_then(Value::as_str)
                .map(str::to_owned)
            else {
                continue;
            };
            for (source, status, name, link) in &rules {
                if *source == op_id
                    && let Some(response) = op["responses"].get_mut(*status)
                {
                    response["links"][*name] = link.clone();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> Value {
        crate::openapi()
    }

    #[test]
    fn operation_ids_are_unique_and_every_link_names_one() {
        let doc = document();
        let mut ids = std::collections::HashSet::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                let id = op["operationId"].as_str().unwrap().to_owned();
                assert!(ids.insert(id.clone()), "{id} twice");
            }
        }
        let mut links = 0;
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                for response in op["responses"].as_object().unwrap().values() {
                    for link in response["links"]
                        .as_object()
                        .into_iter()
                        .flat_map(|l| l.values())
                    {
                        links += 1;
                        let target = link["operationId"].as_str().unwrap();
                        assert!(
                            ids.contains(target),
                            "a link to {target}, which does not exist"
                        );
                    }
                }
            }
        }
        assert!(links >= 14, "{links} links");
    }

    #[test]
    fn every_error_is_a_problem_document_and_every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                for (status, response) in op["responses"].as_object().unwrap() {
                    if status.starts_with('4') || status.starts_with('5') {
                        let types: Vec<&String> =
                            response["content"].as_object().unwrap().keys().collect();
                        assert_eq!(types, [PROBLEM_JSON], "{}", op["operationId"]);
                    }
                }
            }
        }
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for piece in text.split("\"#/components/schemas/").skip(1) {
            let name = piece.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "dangling reference to {name}");
        }
    }

    #[test]
    fn optional_query_parameters_are_not_nullable() {
        let doc = document();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                for p in op["parameters"].as_array().into_iter().flatten() {
                    let schema = p["schema"].to_string();
                    assert!(!schema.contains("\"null\""), "{}: {schema}", p["name"]);
                }
            }
        }
    }
}
