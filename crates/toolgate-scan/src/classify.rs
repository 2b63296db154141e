//! The readings of one tool definition and how they combine (see the crate
//! docs for the rules).

use serde_json::Value;

use crate::rules::{self, description_verb, verb, words};
use crate::{Category, Classification, Evidence, Risk, Source};

/// How risky a category's reading is, to decide disagreements.
fn rank(c: Category) -> u8 {
    match c {
        Category::Other => 0,
        Category::Read => 1,
        Category::Write => 2,
        Category::Execute => 3,
        Category::Destructive => 4,
        Category::Financial => 5,
    }
}

fn name_of(c: Category) -> &'static str {
    match c {
        Category::Read => "Read",
        Category::Write => "Write",
        Category::Execute => "Execute",
        Category::Destructive => "Destructive",
        Category::Financial => "Financial",
        Category::Other => "Other",
    }
}

/// Money verbs that are also ordinary words (transfer an issue, order a
/// list): Financial only with money context.
const AMBIGUOUS_MONEY_VERBS: &[&str] = &[
    "transfer",
    "order",
    "trade",
    "swap",
    "tip",
    "bill",
    "stake",
    "bid",
    "subscribe",
    "deposit",
    "sell",
    "buy",
    "charge",
];

const MONEY_WORDS: &[&str] = &[
    "payment", "money", "funds", "currency", "usd", "eur", "card", "balance", "price", "invoice",
    "refund", "bank", "wallet", "crypto", "stripe", "paypal", "$",
];

struct Schema {
    fields: Vec<String>,
    /// Verb-like values of an `action`/`operation` enum.
    actions: Vec<String>,
}

fn schema_of(tool: &Value) -> Schema {
    let mut fields = Vec::new();
    let mut actions = Vec::new();
    let schema = tool.get("inputSchema").or_else(|| tool.get("input_schema"));
    if let Some(props) = schema
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
    {
        for (key, prop) in props {
            let k = key.to_ascii_lowercase();
            if matches!(k.as_str(), "action" | "operation" | "op" | "method") {
                if let Some(values) = prop.get("enum").and_then(Value::as_array) {
                    actions.extend(
                        values
                            .iter()
                            .filter_map(Value::as_str)
                            .map(str::to_ascii_lowercase),
                    );
                }
            }
            fields.push(k);
        }
    }
    Schema { fields, actions }
}

fn has_field(schema: &Schema, list: &[&str]) -> Option<String> {
    schema
        .fields
        .iter()
        .find(|f| {
            list.contains(&f.as_str())
                || words(f)
                    .last()
                    .is_some_and(|w| list.contains(&w.as_str()) && w.len() > 3)
        })
        .cloned()
}

fn hint(tool: &Value, key: &str) -> Option<bool> {
    tool.get("annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_bool)
}

/// Classifies one tool definition.
pub(crate) fn classify(tool: &Value) -> Classification {
    let name = tool.get("name").and_then(Value::as_str).unwrap_or("");
    let description = tool
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("");
    let desc = description.to_lowercase();
    let name_words = words(name);
    let schema = schema_of(tool);
    let mut evidence = Vec::new();
    let mut ev = |source: Source, detail: String, points_to: Option<Category>| {
        evidence.push(Evidence {
            source,
            detail,
            points_to,
        });
    };

    let amount_field = has_field(&schema, rules::AMOUNT_FIELDS);
    let currency_field = has_field(&schema, rules::CURRENCY_FIELDS);
    let money_context = amount_field.is_some()
        || currency_field.is_some()
        || MONEY_WORDS.iter().any(|w| desc.contains(w))
        || name_words.iter().any(|w| {
            rules::MONEY_NOUNS.contains(&w.as_str()) && !AMBIGUOUS_MONEY_VERBS.contains(&w.as_str())
        });

    // 1. The name's verbs.
    let mut category: Option<Category> = None;
    let mut from_name = false;
    let mut lead_index = None;
    for (i, w) in name_words.iter().enumerate() {
        if let Some(c) = verb(w) {
            lead_index = Some(i);
            let c = money_verb(w, c, money_context);
            ev(Source::Name, format!("verb \"{w}\""), Some(c));
            category = Some(c);
            from_name = true;
            break;
        }
    }
    if let Some(lead) = lead_index {
        let lead_word = name_words[lead].as_str();
        if matches!(lead_word, "start" | "stop") {
            if let Some(n) = name_words
                .iter()
                .find(|w| rules::OBSERVATION_NOUNS.contains(&w.as_str()))
            {
                ev(
                    Source::Name,
                    format!("\"{lead_word}\" a {n}: an observation"),
                    Some(Category::Read),
                );
                category = Some(Category::Read);
            }
        }
        if rules::SESSION_VERBS.contains(&lead_word) && category != Some(Category::Read) {
            if let Some(n) = name_words
                .iter()
                .find(|w| rules::SESSION_NOUNS.contains(&w.as_str()))
            {
                ev(
                    Source::Name,
                    format!("\"{lead_word}\" the agent's own {n}: changes only its session"),
                    Some(Category::Other),
                );
                category = Some(Category::Other);
            }
        }
        // Verbs joined by and/or, and the destructive `force` in any place.
        for i in lead + 1..name_words.len() {
            let w = &name_words[i];
            let joined = i >= 1 && matches!(name_words[i - 1].as_str(), "and" | "or");
            let forced = w == "force" || (w == "push" && name_words[i - 1] == "force");
            if !(joined || forced) {
                continue;
            }
            if let Some(c) = verb(w) {
                let c = money_verb(w, c, money_context);
                ev(Source::Name, format!("verb \"{w}\""), Some(c));
                if category.is_none_or(|cur| rank(c) > rank(cur)) {
                    category = Some(c);
                }
            }
        }
        // A writing verb on a money noun.
        if matches!(category, Some(Category::Write | Category::Execute)) {
            if let Some(noun) = name_words[lead + 1..]
                .iter()
                .find(|w| rules::MONEY_NOUNS.contains(&w.as_str()))
            {
                ev(
                    Source::Name,
                    format!("money noun \"{noun}\" after a writing verb"),
                    Some(Category::Financial),
                );
                category = Some(Category::Financial);
            }
        }
    }

    // 2. The description's leading verb.
    let first_sentence = description.split(['.', '\n', ':']).next().unwrap_or("");
    let desc_lead = first_sentence
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .filter(|w| !w.is_empty())
        .take(8)
        .find_map(description_verb);
    if let Some((v, c)) = &desc_lead {
        let c = money_verb(v, *c, money_context);
        if category.is_none() {
            ev(
                Source::Description,
                format!("leading verb \"{v}\""),
                Some(c),
            );
            category = Some(c);
        } else if c == Category::Execute
            && category == Some(Category::Read)
            && read_only_query(&description.to_lowercase())
        {
            // "Run a read-only SQL query", "Execute a SELECT query": running is
            // how it reads, and the description says it only reads.
            ev(
                Source::Description,
                format!("leading verb \"{v}\", but the description says the query only reads"),
                Some(Category::Read),
            );
        } else if rank(c) > rank(category.unwrap_or(Category::Other))
            && rank(c) >= rank(Category::Execute)
        {
            ev(
                Source::Description,
                format!("leading verb \"{v}\" means {}, riskier than the name's verb: the riskier reading wins", name_of(c)),
                Some(c),
            );
            category = Some(c);
        }
    }

    // An action enum: the riskiest action it offers.
    let mut action_cat: Option<(String, Category)> = None;
    for a in &schema.actions {
        if let Some(c) = words(a).first().and_then(|w| verb(w)) {
            if action_cat
                .as_ref()
                .is_none_or(|(_, cur)| rank(c) > rank(*cur))
            {
                action_cat = Some((a.clone(), c));
            }
        }
    }
    if let Some((a, c)) = action_cat {
        ev(Source::Schema, format!("action \"{a}\""), Some(c));
        if category.is_none_or(|cur| rank(c) > rank(cur) && cur != Category::Other)
            || category.is_none()
        {
            if let Some(cur) = category {
                ev(
                    Source::Schema,
                    format!(
                        "the action \"{a}\" means {}, riskier than {}: the riskier reading wins",
                        name_of(c),
                        name_of(cur)
                    ),
                    Some(c),
                );
            }
            category = Some(c);
        }
    }

    // 3. Phrases in the description.
    let mut irreversible = false;
    for (phrase, c, irrev) in rules::PHRASES {
        if !desc.contains(phrase) {
            continue;
        }
        let negated = desc.contains(&format!("not {phrase}"))
            || desc.contains(&format!("never {phrase}"))
            || desc.contains(&format!("without {phrase}"));
        if negated {
            continue;
        }
        let strong = *irrev || matches!(c, Category::Execute | Category::Financial);
        ev(
            Source::Description,
            format!("\"{}\"", phrase.trim()),
            Some(*c),
        );
        if *irrev {
            irreversible = true;
        }
        let cur = category.unwrap_or(Category::Other);
        if rank(*c) > rank(cur)
            && (strong || !from_name)
            && !(cur == Category::Read && *c == Category::Write)
        {
            if category.is_some() {
                ev(
                    Source::Description,
                    format!(
                        "\"{}\" means {}, riskier than {}: the riskier reading wins",
                        phrase.trim(),
                        name_of(*c),
                        name_of(cur)
                    ),
                    Some(*c),
                );
            }
            category = Some(*c);
        }
    }

    // 4. The input schema.
    if let Some(f) = &amount_field {
        ev(
            Source::Schema,
            format!("field \"{f}\""),
            Some(Category::Financial),
        );
    }
    if let Some(f) = &currency_field {
        ev(
            Source::Schema,
            format!("field \"{f}\""),
            Some(Category::Financial),
        );
    }
    if (amount_field.is_some() || currency_field.is_some())
        && matches!(category, None | Some(Category::Write | Category::Execute))
        && money_context_strong(&desc, &name_words, &currency_field)
    {
        category = Some(Category::Financial);
    }
    let code_field = has_field(&schema, rules::CODE_FIELDS);
    if let Some(f) = &code_field {
        ev(
            Source::Schema,
            format!("field \"{f}\""),
            Some(Category::Execute),
        );
        if matches!(category, None | Some(Category::Other)) {
            category = Some(Category::Execute);
        }
    }
    let url_field = has_field(&schema, rules::URL_FIELDS);
    if let Some(f) = &url_field {
        ev(
            Source::Schema,
            format!("field \"{f}\": reaches the open world"),
            None,
        );
    }
    if let Some(f) = has_field(&schema, rules::PATH_FIELDS) {
        ev(
            Source::Schema,
            format!("field \"{f}\": the file system"),
            None,
        );
    }
    let recipient = has_field(&schema, rules::RECIPIENT_FIELDS);
    if let Some(f) = &recipient {
        ev(
            Source::Schema,
            format!("field \"{f}\": communication"),
            None,
        );
    }

    // 5. Annotations.
    let read_only = hint(tool, "readOnlyHint");
    let destructive = hint(tool, "destructiveHint");
    let open_world = hint(tool, "openWorldHint");
    if let Some(v) = hint(tool, "idempotentHint") {
        ev(Source::Annotation, format!("idempotentHint: {v}"), None);
    }
    if let Some(v) = open_world {
        ev(Source::Annotation, format!("openWorldHint: {v}"), None);
    }
    if read_only == Some(true) {
        ev(
            Source::Annotation,
            "readOnlyHint: true".into(),
            Some(Category::Read),
        );
        match category {
            None => category = Some(Category::Read),
            Some(c) if rank(c) > rank(Category::Read) => ev(
                Source::Annotation,
                format!(
                    "readOnlyHint: true, but the wording means {}: the riskier reading wins",
                    name_of(c)
                ),
                Some(c),
            ),
            _ => {}
        }
    }
    let mut destructive_hinted = false;
    if destructive == Some(true) && read_only != Some(true) {
        ev(
            Source::Annotation,
            "destructiveHint: true".into(),
            Some(Category::Destructive),
        );
        match category {
            None => category = Some(Category::Destructive),
            Some(Category::Other) if !from_name && desc_lead.is_none() => {
                category = Some(Category::Destructive)
            }
            Some(Category::Read) => {
                ev(
                    Source::Annotation,
                    "destructiveHint: true, but the wording means Read: the riskier reading wins (Write: not read-only)".into(),
                    Some(Category::Write),
                );
                category = Some(Category::Write);
            }
            Some(Category::Write) => destructive_hinted = true,
            _ => {}
        }
    } else if destructive == Some(false) {
        ev(Source::Annotation, "destructiveHint: false".into(), None);
    }
    if read_only == Some(false) {
        ev(Source::Annotation, "readOnlyHint: false".into(), None);
        if category.is_none() {
            category = Some(Category::Write);
        }
    }

    let category = category.unwrap_or(Category::Other);
    let nothing_found = !from_name
        && desc_lead.is_none()
        && read_only.is_none()
        && destructive.is_none()
        && code_field.is_none();
    if category == Category::Other && nothing_found {
        ev(
            Source::Name,
            "no verb, phrase, field or annotation recognised".into(),
            Some(Category::Other),
        );
    }

    // Risk.
    let bulk = name_words
        .iter()
        .find(|w| rules::BULK_WORDS.contains(&w.as_str()))
        .cloned();
    let risk = match category {
        Category::Other => Risk::Low,
        Category::Read => {
            let secret = name_words
                .iter()
                .find(|w| rules::SECRET_WORDS.contains(&w.as_str()));
            if let Some(s) = secret {
                ev(Source::Name, format!("\"{s}\": reads secrets"), None);
                Risk::Medium
            } else if open_world == Some(true) || url_field.is_some() {
                Risk::Medium
            } else {
                Risk::Low
            }
        }
        Category::Write => {
            let overwrite = desc.contains("overwrite");
            let bulk_write = name_words
                .iter()
                .any(|w| matches!(w.as_str(), "all" | "bulk" | "batch" | "mass" | "broadcast"));
            if overwrite {
                ev(
                    Source::Description,
                    "\"overwrite\": existing data can be lost".into(),
                    None,
                );
            }
            if destructive_hinted {
                ev(
                    Source::Annotation,
                    "destructiveHint: true on a Write tool: it may overwrite, risk raised".into(),
                    None,
                );
            }
            if overwrite || destructive_hinted || bulk_write {
                Risk::High
            } else {
                Risk::Medium
            }
        }
        Category::Execute => Risk::High,
        Category::Destructive => {
            let whole = bulk.is_some()
                || name_words.iter().any(|w| {
                    matches!(w.as_str(), "drop" | "purge" | "wipe" | "truncate" | "force")
                });
            if irreversible || whole {
                Risk::Critical
            } else {
                Risk::High
            }
        }
        Category::Financial => Risk::Critical,
    };
    Classification {
        category,
        risk,
        evidence,
    }
}

fn money_verb(word: &str, c: Category, money_context: bool) -> Category {
    if c == Category::Financial && AMBIGUOUS_MONEY_VERBS.contains(&word) && !money_context {
        Category::Write
    } else {
        c
    }
}

/// An amount field makes a writing tool Financial only with money around it:
/// a currency field, or money words in the name or description.
fn money_context_strong(desc: &str, name_words: &[String], currency: &Option<String>) -> bool {
    currency.is_some()
        || MONEY_WORDS.iter().any(|w| desc.contains(w))
        || name_words
            .iter()
            .any(|w| rules::MONEY_NOUNS.contains(&w.as_str()))
}

/// A description that says its query only reads ("read-only SQL query",
/// "SELECT query").
fn read_only_query(description: &str) -> bool {
    [
        "read-only",
        "read only",
        "readonly",
        "select query",
        "select queries",
        "select statement",
    ]
    .iter()
    .any(|p| description.contains(p))
}
