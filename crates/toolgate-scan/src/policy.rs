//! The recommended policy (see the crate docs' contract).

use serde_json::{json, Map, Value};

use crate::{Category, Classification, Evidence, Risk, Source};

fn risk_word(r: Risk) -> &'static str {
    match r {
        Risk::Low => "low",
        Risk::Medium => "medium",
        Risk::High => "high",
        Risk::Critical => "critical",
    }
}

/// The evidence a person should read first: the first piece that points to
/// the category found, else the first piece.
fn main_evidence(c: &Classification) -> String {
    let pick: Option<&Evidence> = c
        .evidence
        .iter()
        .find(|e| e.points_to == Some(c.category) && e.detail.contains("riskier reading wins"))
        .or_else(|| c.evidence.iter().find(|e| e.points_to == Some(c.category)))
        .or_else(|| c.evidence.first());
    match pick {
        Some(e) => {
            let source = match e.source {
                Source::Annotation => "annotation",
                Source::Name => "name",
                Source::Description => "description",
                Source::Schema => "input schema",
            };
            format!("{source}: {}", e.detail)
        }
        None => "no evidence".to_string(),
    }
}

/// The amount-like argument of a Financial tool, if its schema has one.
fn amount_field(tool: &Value) -> Option<String> {
    let props = tool
        .get("inputSchema")
        .or_else(|| tool.get("input_schema"))?
        .get("properties")?
        .as_object()?;
    props
        .keys()
        .find(|k| crate::rules::AMOUNT_FIELDS.contains(&k.to_ascii_lowercase().as_str()))
        .or_else(|| {
            props
                .keys()
                .find(|k| k.to_ascii_lowercase().contains("amount"))
        })
        .cloned()
}

/// See [`crate::recommend_policy`].
pub(crate) fn recommend_policy(tools: &[(String, Value, Classification)], strict: bool) -> Value {
    let mut rules = Map::new();
    for (name, tool, c) in tools {
        let why = format!(
            "{:?}, {} risk ({})",
            c.category,
            risk_word(c.risk),
            main_evidence(c)
        );
        let rule = match c.category {
            Category::Read => json!({ "description": format!("{why}: allowed") }),
            Category::Write => json!({
                "description": format!("{why}: at most 30 calls a minute per grant"),
                "limits": [{ "counter": format!("{name}_rate"), "window": "minute", "max": 30, "scope": "grant" }]
            }),
            Category::Execute => json!({
                "description": format!("{why}: at most 10 calls a minute per grant"),
                "limits": [{ "counter": format!("{name}_rate"), "window": "minute", "max": 10, "scope": "grant" }]
            }),
            Category::Destructive if strict => json!({
                "action": "hide",
                "description": format!("{why}: hidden (strict)")
            }),
            Category::Destructive => json!({
                "action": "require_approval",
                "reason": format!("{name} can destroy data: a person approves each call"),
                "description": format!("{why}: a person approves each call")
            }),
            Category::Financial => {
                let mut rule = json!({
                    "action": "require_approval",
                    "reason": format!("{name} moves money: a person approves each call"),
                    "description": format!("{why}: a person approves each call")
                });
                if let Some(field) = amount_field(tool) {
                    rule["limits"] = json!([{
                        "counter": format!("{name}_spend"), "window": "day", "max": 1000, "scope": "grant",
                        "cost": format!("args.{field}")
                    }]);
                    rule["description"] = json!(format!("{why}: a person approves each call; at most 1000 of \"{field}\" a day per grant"));
                }
                rule
            }
            Category::Other => json!({
                "description": format!("{why}: not recognised as any category, so left to the default (deny)"),
                "action": "deny",
                "reason": format!("{name} was not recognised by the scan: review it before allowing it")
            }),
        };
        rules.insert(name.clone(), rule);
    }
    json!({ "version": "1", "default": "deny", "tools": Value::Object(rules) })
}
