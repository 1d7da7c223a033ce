//! Where the text of a prompt and of an answer lies in their JSON: the strings guardrails read
//! and rewrite. Only text is visited: roles, ids, tool names, image URLs and numbers are not.

use serde_json::Value;

/// Keys whose values hold a prompt's text: `messages[].content` (a string or parts), a part's
/// `text`, and the Responses API's `input` items.
const PROMPT_KEYS: &[&str] = &["content", "text", "input"];
/// Keys whose values hold an answer's text: chat (`choices[].message.content`, stream
/// `delta.content`), completions (`choices[].text`), Responses (`output[].content[].text`).
const ANSWER_KEYS: &[&str] = &["choices", "message", "delta", "content", "text", "output"];

/// Calls `f` on each text of a prompt (the value of `messages`, `prompt` or `input`).
pub fn prompt_texts(v: &mut Value, f: &mut dyn FnMut(&mut String)) {
    visit(v, PROMPT_KEYS, f, 0);
}

/// Calls `f` on each text of an answer (a whole answer, or one stream chunk).
pub fn answer_texts(v: &mut Value, f: &mut dyn FnMut(&mut String)) {
    if let Value::Object(map) = v {
        for (k, child) in map.iter_mut() {
            if ANSWER_KEYS.contains(&k.as_str()) {
                visit(child, ANSWER_KEYS, f, 0);
            }
        }
    }
}

/// Nesting followed at most: the body was parsed by serde_json (128 levels), this is a second bound.
const MAX_DEPTH: usize = 32;

fn visit(v: &mut Value, keys: &[&str], f: &mut dyn FnMut(&mut String), depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    match v {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter_mut().for_each(|i| visit(i, keys, f, depth + 1)),
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if keys.contains(&k.as_str()) {
                    visit(child, keys, f, depth + 1);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn collect(v: &mut Value, prompt: bool) -> Vec<String> {
        let mut out = Vec::new();
        let mut f = |s: &mut String| out.push(s.clone());
        if prompt {
            prompt_texts(v, &mut f)
        } else {
            answer_texts(v, &mut f)
        }
        out
    }

    #[test]
    fn only_text_is_visited() {
        let mut messages = json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "name": "ann", "content": [
                {"type": "text", "text": "hello"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
            ]}
        ]);
        assert_eq!(collect(&mut messages, true), ["be brief", "hello"]);
        let mut answer = json!({"id": "x", "model": "m", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ]});
        assert_eq!(collect(&mut answer, false), ["hi"]);
        let mut chunk = json!({"id": "x", "choices": [{"index": 0, "delta": {"content": "t"}}]});
        assert_eq!(collect(&mut chunk, false), ["t"]);
    }
}
