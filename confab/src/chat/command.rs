//! What a line typed in `confab chat` means.

/// One typed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Text for the current room.
    Say(String),
    Join(String),
    Leave,
    Dm(String),
    Rooms,
    Who,
    History,
    Quit,
    Help,
    /// A command that is not one, or lacks its argument: what to tell the user.
    Invalid(String),
    /// An empty line.
    Nothing,
}

pub const HELP: &str = "/join ROOM · /leave · /dm USER · /rooms · /who · /history · /quit · /help; \
                        anything else is sent to the current room";

pub fn parse(line: &str) -> Input {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Input::Nothing;
    }
    let Some(command) = line.strip_prefix('/') else { return Input::Say(line.to_owned()) };
    // `//text` sends `/text`.
    if command.starts_with('/') {
        return Input::Say(command.to_owned());
    }
    let mut words = command.split_whitespace();
    let name = words.next().unwrap_or("");
    let arg = words.next().map(str::to_owned);
    match (name, arg) {
        ("join" | "j", Some(room)) => Input::Join(room),
        ("dm" | "msg", Some(user)) => Input::Dm(user),
        ("join" | "j", None) => Input::Invalid("usage: /join ROOM".into()),
        ("dm" | "msg", None) => Input::Invalid("usage: /dm USER".into()),
        ("leave" | "part", _) => Input::Leave,
        ("rooms", _) => Input::Rooms,
        ("who", _) => Input::Who,
        ("history", _) => Input::History,
        ("quit" | "exit" | "q", _) => Input::Quit,
        ("help" | "h" | "?", _) => Input::Help,
        (other, _) => Input::Invalid(format!("unknown command /{other}; {HELP}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_text_or_commands() {
        assert_eq!(parse("hello there\n"), Input::Say("hello there".into()));
        assert_eq!(parse("/join general"), Input::Join("general".into()));
        assert_eq!(parse("/dm bob"), Input::Dm("bob".into()));
        assert_eq!(parse("/join"), Input::Invalid("usage: /join ROOM".into()));
        assert_eq!(parse("/leave"), Input::Leave);
        assert_eq!(parse("/rooms"), Input::Rooms);
        assert_eq!(parse("/who"), Input::Who);
        assert_eq!(parse("/history"), Input::History);
        assert_eq!(parse("/quit"), Input::Quit);
        assert_eq!(parse("/help"), Input::Help);
        assert_eq!(parse("//slash"), Input::Say("/slash".into()));
        assert_eq!(parse("   "), Input::Nothing);
        assert!(matches!(parse("/frobnicate"), Input::Invalid(m) if m.contains("/frobnicate")));
    }
}
