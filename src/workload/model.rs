//! The synthetic traffic: which operation runs next, on which session, with
//! which text. Sessions follow Zipf(`zipf_exponent`) popularity; questions and
//! memories come from topic clusters, so the same and similar questions recur
//! as they do in real chat traffic. Everything derives from `workload.seed`:
//! the same seed gives the same sequence of operations.

use crate::config::WorkloadConfig;
use crate::metrics::label_values;
use crate::zipf::Zipf;

label_values! {
    /// An operation, as the `operation` label spells it.
    pub(crate) enum Operation {
        GetChatHistory => "get_chat_history",
        StoreChatEntry => "store_chat_entry",
        QuerySimilarMemories => "query_similar_memories",
        StoreMemory => "store_memory",
    }
}

/// One operation to run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    GetChatHistory {
        session: u64,
    },
    StoreChatEntry {
        session: u64,
        role: &'static str,
        content: String,
    },
    QuerySimilarMemories {
        text: String,
    },
    StoreMemory {
        text: String,
    },
}

impl Op {
    /// The operation's label.
    pub(crate) fn operation(&self) -> Operation {
        match self {
            Self::GetChatHistory { .. } => Operation::GetChatHistory,
            Self::StoreChatEntry { .. } => Operation::StoreChatEntry,
            Self::QuerySimilarMemories { .. } => Operation::QuerySimilarMemories,
            Self::StoreMemory { .. } => Operation::StoreMemory,
        }
    }
}

/// A topic: what users ask about, and how.
struct Topic {
    subjects: &'static [&'static str],
    questions: &'static [&'static str],
    facts: &'static [&'static str],
}

const TOPICS: &[Topic] = &[
    Topic {
        subjects: &[
            "password",
            "two-factor login",
            "email address",
            "username",
            "recovery codes",
        ],
        questions: &[
            "how do I reset my {}",
            "I cannot change my {}",
            "where do I update my {}",
            "why was my {} rejected",
        ],
        facts: &[
            "the user changed their {} last week",
            "the user lost access to their {}",
            "the user asked twice about their {}",
        ],
    },
    Topic {
        subjects: &[
            "invoice",
            "refund",
            "subscription plan",
            "credit card",
            "billing address",
        ],
        questions: &[
            "why is my {} wrong",
            "how do I get a copy of my {}",
            "can I change my {}",
            "when will my {} be processed",
        ],
        facts: &[
            "the user disputes a charge on their {}",
            "the user prefers email for their {}",
            "the user upgraded their {}",
        ],
    },
    Topic {
        subjects: &[
            "vector index",
            "embedding model",
            "chunk size",
            "retrieval latency",
            "reranker",
        ],
        questions: &[
            "how do I tune the {}",
            "what is a good {} for long documents",
            "why is the {} slow",
            "should I change the {}",
        ],
        facts: &[
            "the user runs a large {}",
            "the user benchmarked the {} yesterday",
            "the user wants a cheaper {}",
        ],
    },
    Topic {
        subjects: &[
            "flight",
            "hotel booking",
            "rental car",
            "travel insurance",
            "seat upgrade",
        ],
        questions: &[
            "can I cancel my {}",
            "how do I change my {}",
            "is my {} confirmed",
            "what does my {} cover",
        ],
        facts: &[
            "the user travels to Lisbon with a {}",
            "the user needs an accessible {}",
            "the user booked a {} for May",
        ],
    },
    Topic {
        subjects: &[
            "pasta recipe",
            "sourdough starter",
            "knife sharpening",
            "meal plan",
            "coffee grinder",
        ],
        questions: &[
            "what is the best {}",
            "how do I fix my {}",
            "how often should I use a {}",
            "give me a simple {}",
        ],
        facts: &[
            "the user is vegetarian and asked for a {}",
            "the user owns a cheap {}",
            "the user enjoyed the last {}",
        ],
    },
    Topic {
        subjects: &[
            "kubernetes pod",
            "redis cluster",
            "prometheus alert",
            "grafana dashboard",
            "memory limit",
        ],
        questions: &[
            "why does my {} keep restarting",
            "how do I debug a {}",
            "what is a sane {}",
            "how do I monitor a {}",
        ],
        facts: &[
            "the user runs an on-call rotation for the {}",
            "the user hit an outage with a {}",
            "the user scales the {} nightly",
        ],
    },
];

/// The deterministic generator.
pub(crate) struct Model {
    rng: fastrand::Rng,
    sessions: Zipf,
    topics: Zipf,
    /// Cumulative operation weights, normalised to 1.
    mix: [f64; 4],
    turns: u64,
}

impl Model {
    /// A generator for `config`, seeded by `config.seed`.
    pub(crate) fn new(config: &WorkloadConfig) -> Self {
        let weights = [
            config.mix.get_chat_history,
            config.mix.store_chat_entry,
            config.mix.query_similar_memories,
            config.mix.store_memory,
        ];
        let total: f64 = weights.iter().sum();
        let mut mix = [0.0; 4];
        let mut acc = 0.0;
        for (slot, weight) in mix.iter_mut().zip(weights) {
            acc += weight / total;
            *slot = acc;
        }
        Self {
            rng: fastrand::Rng::with_seed(config.seed),
            sessions: Zipf::new(
                usize::try_from(config.sessions).unwrap_or(usize::MAX),
                config.zipf_exponent,
            ),
            topics: Zipf::new(TOPICS.len(), 1.0),
            mix,
            turns: 0,
        }
    }

    /// The next operation.
    pub(crate) fn next_op(&mut self) -> Op {
        let pick = self.rng.f64();
        let operation = self.mix.iter().position(|&edge| pick < edge).unwrap_or(3);
        match operation {
            0 => Op::GetChatHistory {
                session: self.session(),
            },
            1 => {
                self.turns += 1;
                let role = if self.turns % 2 == 1 {
                    "user"
                } else {
                    "assistant"
                };
                Op::StoreChatEntry {
                    session: self.session(),
                    role,
                    content: self.question(),
                }
            }
            2 => Op::QuerySimilarMemories {
                text: self.question(),
            },
            _ => Op::StoreMemory { text: self.fact() },
        }
    }

    fn session(&mut self) -> u64 {
        self.sessions.rank(self.rng.f64()) as u64
    }

    fn topic(&mut self) -> &'static Topic {
        &TOPICS[self.topics.rank(self.rng.f64())]
    }

    fn question(&mut self) -> String {
        let topic = self.topic();
        let template = topic.questions[self.rng.usize(..topic.questions.len())];
        template.replace("{}", topic.subjects[self.rng.usize(..topic.subjects.len())])
    }

    fn fact(&mut self) -> String {
        let topic = self.topic();
        let template = topic.facts[self.rng.usize(..topic.facts.len())];
        template.replace("{}", topic.subjects[self.rng.usize(..topic.subjects.len())])
    }
}

/// The cache key form of a text: lower case, words separated by one space.
pub(crate) fn normalize(text: &str) -> String {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config(seed: u64) -> WorkloadConfig {
        let mut config = Config::from_args(["x"]).unwrap().config.workload;
        config.seed = seed;
        config
    }

    #[test]
    fn the_same_seed_gives_the_same_operations() {
        let run = |seed| {
            let mut model = Model::new(&config(seed));
            (0..500).map(|_| model.next_op()).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn the_mix_is_respected() {
        let mut model = Model::new(&config(3));
        let mut counts = [0usize; 4];
        for _ in 0..20_000 {
            counts[model.next_op().operation() as usize] += 1;
        }
        // Defaults: 0.5, 0.2, 0.25, 0.05.
        for (count, expected) in counts.iter().zip([0.5, 0.2, 0.25, 0.05]) {
            let share = *count as f64 / 20_000.0;
            assert!((share - expected).abs() < 0.015, "{counts:?}");
        }
    }

    #[test]
    fn popular_sessions_and_questions_recur() {
        let mut model = Model::new(&config(4));
        let mut sessions = std::collections::HashMap::new();
        let mut questions = std::collections::HashSet::new();
        let mut asked = 0;
        for _ in 0..5000 {
            match model.next_op() {
                Op::GetChatHistory { session } => *sessions.entry(session).or_insert(0) += 1,
                Op::QuerySimilarMemories { text } => {
                    asked += 1;
                    questions.insert(text);
                }
                _ => {}
            }
        }
        let top = sessions.get(&0).copied().unwrap_or(0);
        assert!(top > 100, "session 0 is the most popular: {top}");
        assert!(
            questions.len() < asked / 3,
            "{} distinct of {asked} questions",
            questions.len()
        );
    }

    #[test]
    fn normalize_folds_case_and_punctuation() {
        assert_eq!(
            normalize("  How do I reset my PASSWORD?? "),
            "how do i reset my password"
        );
        assert_eq!(normalize("two-factor  login"), "two factor login");
    }
}
