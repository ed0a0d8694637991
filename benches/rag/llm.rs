//! An optional answerer: any OpenAI-compatible chat endpoint (a llama.cpp
//! server, vLLM, Ollama) given the question and the retrieved chunks,
//! each labelled with its citation. Never called without a URL.

use std::time::Duration;

use super::answer::Answer;

/// How long one answer may take.
const TIMEOUT: Duration = Duration::from_secs(120);

/// A chat endpoint and the model to ask.
#[derive(Debug, Clone, PartialEq)]
pub struct Llm {
    /// `http(s)://host:port` (with or without `/v1/chat/completions`).
    pub url: String,
    /// The model name the server expects.
    pub model: String,
}

impl Llm {
    /// The endpoint at `url` (else `DFUT_LLM_URL`) with `model` (else
    /// `DFUT_LLM_MODEL`, else `default`); `None` without a URL.
    pub fn configured(url: Option<String>, model: Option<String>) -> Option<Self> {
        let url = url.or_else(|| std::env::var("DFUT_LLM_URL").ok())?;
        let url = url.trim().trim_end_matches('/').to_owned();
        if url.is_empty() {
            return None;
        }
        let model = model
            .or_else(|| std::env::var("DFUT_LLM_MODEL").ok())
            .unwrap_or_else(|| "default".to_owned());
        Some(Self { url, model })
    }

    fn endpoint(&self) -> String {
        if self.url.ends_with("/chat/completions") {
            self.url.clone()
        } else if self.url.ends_with("/v1") {
            format!("{}/chat/completions", self.url)
        } else {
            format!("{}/v1/chat/completions", self.url)
        }
    }

    /// Asks the model `question` with `sources` (citation, text): the
    /// answer's text, citing the sources it names (all of them if it
    /// names none), and `follow_ups` passed through.
    pub fn answer(
        &self,
        question: &str,
        sources: &[(String, String)],
        follow_ups: Vec<String>,
    ) -> Result<Answer, String> {
        let mut context = String::new();
        for (cite, text) in sources {
            context.push_str(&format!("[{cite}] {text}\n"));
        }
        let body = serde_json::json!({
            "model": self.model,
            "temperature": 0,
            "messages": [
                {
                    "role": "system",
                    "content": "Answer the question from the sources below only, briefly. \
                                Cite each source you use by its label, like [pipe(2)].",
                },
                {
                    "role": "user",
                    "content": format!("Question: {question}\n\nSources:\n{context}"),
                },
            ],
        });
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .build()
            .into();
        let reply: serde_json::Value = agent
            .post(&self.endpoint())
            .send_json(&body)
            .map_err(|e| format!("{}: {e}", self.endpoint()))?
            .body_mut()
            .read_json()
            .map_err(|e| format!("{}: the reply is not JSON: {e}", self.endpoint()))?;
        let text = reply["choices"][0]["message"]["content"]
            .as_str()
            .ok_or_else(|| {
                format!(
                    "{}: no choices[0].message.content in {reply}",
                    self.endpoint()
                )
            })?
            .trim()
            .to_owned();
        // A citation is named as a word of its own (not `pread(2)` for
        // `read(2)`).
        let names = |cite: &str| {
            text.match_indices(cite).any(|(i, _)| {
                !text[..i]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_')
            })
        };
        let mut citations: Vec<String> = Vec::new();
        for (cite, _) in sources {
            if names(cite) && !citations.contains(cite) {
                citations.push(cite.clone());
            }
        }
        if citations.is_empty() {
            for (cite, _) in sources {
                if !citations.contains(cite) {
                    citations.push(cite.clone());
                }
            }
        }
        Ok(Answer {
            text,
            citations,
            follow_ups,
        })
    }
}
