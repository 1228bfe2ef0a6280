//! The model's own chat template (`chat_template.jinja`), rendered with
//! minijinja, as Hugging Face's `apply_chat_template` does.

use minijinja::{Environment, context};

use super::ChatMessage;
use crate::InferenceError;

pub struct ChatTemplate {
    env: Environment<'static>,
}

impl ChatTemplate {
    pub fn new(source: String) -> Result<Self, InferenceError> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template_owned("chat", source)
            .map_err(|e| InferenceError::Template(e.to_string()))?;
        Ok(Self { env })
    }

    /// The conversation, ending with the opening of the assistant's turn.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, InferenceError> {
        let tpl = self
            .env
            .get_template("chat")
            .map_err(|e| InferenceError::Template(e.to_string()))?;
        tpl.render(context! {
            messages => minijinja::Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => true,
        })
        .map_err(|e| InferenceError::Template(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}";

    #[test]
    fn chatml_renders_roles_and_the_generation_prompt() {
        let t = ChatTemplate::new(CHATML.into()).unwrap();
        let out = t
            .render(&[
                ChatMessage::new("system", "S"),
                ChatMessage::new("user", "Q"),
            ])
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn a_broken_template_is_an_error_not_a_panic() {
        assert!(ChatTemplate::new("{% for %}".into()).is_err());
    }
}
