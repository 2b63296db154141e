//! Data-driven checks of the rules, the seed tools and disagreement cases.

use serde_json::{json, Value};
use toolgate_scan::{classify, recommend_policy, Category, Risk};

fn check(tool: Value, category: Category, risk: Risk) {
    let c = classify(&tool);
    assert_eq!(
        (c.category, c.risk),
        (category, risk),
        "{tool}: {:?}",
        c.evidence
    );
}

const SEEDS: [(&str, &str); 5] = [
    ("send-message", "Send a text message to a phone number or email"),
    ("send_message", "Send a message to a contact via Take Blip"),
    ("send_text_message", "Send a plain text message. For business-initiated conversations outside the 24h customer-service window, use send_template_message instead."),
    ("send-message", "Send a PRIVATE message to ONE specific agent (like a DM). Only they will see it. REQUIRES:"),
    ("send_text", "Send a text message via WhatsApp"),
];

#[test]
fn seeds_are_write_medium_with_the_seed_rule() {
    for (name, description) in SEEDS {
        let tool = json!({"name": name, "description": description, "inputSchema": {"type": "object", "properties": {"to": {"type": "string"}, "text": {"type": "string"}}}});
        check(tool.clone(), Category::Write, Risk::Medium);
        let policy = recommend_policy(&[(name.to_string(), tool.clone(), classify(&tool))], false);
        assert_eq!(policy["default"], "deny");
        assert_eq!(
            policy["tools"][name]["limits"],
            json!([{"counter": format!("{name}_rate"), "window": "minute", "max": 30, "scope": "grant"}])
        );
        toolgate_policy::parse_policy(
            &policy.to_string(),
            toolgate_policy::Format::Json,
            "seed.json",
        )
        .expect("valid policy");
    }
}

#[test]
fn rules() {
    let cases = [
        (json!({"name": "list_files"}), Category::Read, Risk::Low),
        (
            json!({"name": "get-env", "description": "Returns all environment variables"}),
            Category::Read,
            Risk::Medium,
        ),
        (
            json!({"name": "deleteRepository", "description": "Permanently deletes a repository"}),
            Category::Destructive,
            Risk::Critical,
        ),
        (
            json!({"name": "remove_label"}),
            Category::Destructive,
            Risk::High,
        ),
        (
            json!({"name": "run_shell", "inputSchema": {"properties": {"command": {}}}}),
            Category::Execute,
            Risk::High,
        ),
        (
            json!({"name": "create_refund", "inputSchema": {"properties": {"amount": {}}}}),
            Category::Financial,
            Risk::Critical,
        ),
        (json!({"name": "list_invoices"}), Category::Read, Risk::Low),
        (
            json!({"name": "transfer_issue", "description": "Transfer an issue to another repository"}),
            Category::Write,
            Risk::Medium,
        ),
        (
            json!({"name": "transfer", "description": "Transfer funds between accounts", "inputSchema": {"properties": {"amount": {}, "currency": {}}}}),
            Category::Financial,
            Risk::Critical,
        ),
        (
            json!({"name": "force_push"}),
            Category::Destructive,
            Risk::Critical,
        ),
        (
            json!({"name": "sequentialthinking"}),
            Category::Other,
            Risk::Low,
        ),
    ];
    for (tool, category, risk) in cases {
        check(tool, category, risk);
    }
}

#[test]
fn disagreements_take_the_riskier_reading() {
    let tool = json!({"name": "delete_page", "annotations": {"readOnlyHint": true}});
    let c = classify(&tool);
    assert_eq!(c.category, Category::Destructive);
    assert!(
        c.evidence
            .iter()
            .any(|e| e.detail.contains("riskier reading wins")),
        "{:?}",
        c.evidence
    );
    let tool = json!({"name": "get_report", "description": "Gets the report. This permanently deletes it afterwards.", "annotations": {"readOnlyHint": true}});
    assert_ne!(classify(&tool).category, Category::Read);
}

#[test]
fn financial_policy_has_a_spend_limit_and_parses() {
    let tool = json!({"name": "pay_invoice", "inputSchema": {"properties": {"amount": {}, "currency": {}}}});
    let del = json!({"name": "delete_file"});
    let tools = vec![
        ("pay_invoice".to_string(), tool.clone(), classify(&tool)),
        ("delete_file".to_string(), del.clone(), classify(&del)),
    ];
    for strict in [false, true] {
        let p = recommend_policy(&tools, strict);
        assert_eq!(p["tools"]["pay_invoice"]["action"], "require_approval");
        assert_eq!(
            p["tools"]["pay_invoice"]["limits"][0]["cost"],
            "args.amount"
        );
        assert!(p["tools"]["delete_file"]["description"]
            .as_str()
            .unwrap()
            .contains("Destructive"));
        toolgate_policy::parse_policy(&p.to_string(), toolgate_policy::Format::Json, "p.json")
            .expect("valid policy");
    }
}

#[test]
fn a_query_tool_that_says_it_only_reads_is_read() {
    check(
        json!({"name": "query", "description": "Run a read-only SQL query", "inputSchema": {"type": "object", "properties": {"sql": {"type": "string"}}}}),
        Category::Read,
        Risk::Low,
    );
    // Without that assurance, running a query is Execute.
    check(
        json!({"name": "query", "description": "Run a SQL statement", "inputSchema": {"type": "object", "properties": {"sql": {"type": "string"}}}}),
        Category::Execute,
        Risk::High,
    );
}

#[test]
fn pure_conversions_are_other() {
    check(
        json!({"name": "convert_time", "description": "Convert time between timezones", "inputSchema": {"type": "object"}}),
        Category::Other,
        Risk::Low,
    );
}
