//! `confab chat --plain`: line mode for pipes and scripts. Each message is
//! one line on stdout, `[room] sender: text`; everything else (connection
//! status, replies to commands, errors) goes to stderr, prefixed with `* `.
//! Each line of stdin is sent to the current room or is a slash command;
//! the end of stdin quits once every message sent is acknowledged.

use std::io::{BufRead, Write};

use tokio::sync::mpsc;

use super::command::{self, Input};
use super::engine::Update;

pub async fn run(commands: mpsc::Sender<Input>, mut updates: mpsc::Receiver<Update>) -> anyhow::Result<()> {
    // Blocking reads on a thread of their own: the process exits without
    // waiting for it.
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let input = command::parse(&line);
            let quit = input == Input::Quit;
            if commands.blocking_send(input).is_err() || quit {
                return;
            }
        }
        let _ = commands.blocking_send(Input::Quit);
    });
    while let Some(update) = updates.recv().await {
        if update == Update::Quit {
            break;
        }
        let (out, line) = line(&update);
        let mut stdout = std::io::stdout().lock();
        let mut stderr = std::io::stderr().lock();
        let sink: &mut dyn Write = if out { &mut stdout } else { &mut stderr };
        writeln!(sink, "{line}")?;
        sink.flush()?;
    }
    Ok(())
}

/// An update as a line, and whether it is a message (stdout) or not (stderr).
pub fn line(update: &Update) -> (bool, String) {
    match update {
        Update::Message { room, from, text, .. } => (true, format!("[{room}] {from}: {}", one_line(text))),
        Update::Connected { user } => (false, format!("* connected as {user}")),
        Update::Reconnecting { why, retry } => {
            (false, format!("* disconnected ({why}); reconnecting in {:.1} s", retry.as_secs_f32()))
        }
        Update::Current(target) => (false, format!("* now talking in {target}")),
        Update::Room(room) => (false, format!("* in room {room}")),
        Update::Left(room) => (false, format!("* left {room}")),
        Update::Info(info) => (false, format!("* {info}")),
        Update::Error(e) => (false, format!("* error: {e}")),
        Update::Quit => (false, "* bye".into()),
    }
}

/// A message's text on one line: its newlines shown as `\n`.
fn one_line(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n").replace('\r', "\\r")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_one_line_with_room_sender_and_text() {
        let m = Update::Message { room: "r".into(), seq: 1, from: "bob".into(), text: "a\nb".into(), older: false };
        assert_eq!(line(&m), (true, "[r] bob: a\\nb".into()));
        assert!(!line(&Update::Info("x".into())).0);
    }
}
