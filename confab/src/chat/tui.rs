//! The full-screen front end of `confab chat` (ratatui on crossterm): the
//! rooms with their unread counts on the left, the open conversation on the
//! right, the input line below it and a status line at the bottom (showing
//! the reconnection while there is one). Keys are read on a thread of their
//! own; Enter sends the line, Tab opens the next room, Esc or Ctrl-C quits.

use std::collections::{BTreeMap, VecDeque};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, List, ListItem, Paragraph, Wrap};
use tokio::sync::mpsc;

use super::command::{self, Input};
use super::engine::Update;

/// Lines kept per conversation.
const KEEP: usize = 1000;

#[derive(Default)]
struct Screen {
    /// Each room's lines and unread count.
    rooms: BTreeMap<String, (VecDeque<String>, usize)>,
    /// What is shown on the right: a room, `@user`, or nothing yet.
    current: String,
    /// Notices (command replies, errors) shown in the conversation pane too.
    status: String,
    input: String,
}

impl Screen {
    fn lines(&mut self, room: &str) -> &mut (VecDeque<String>, usize) {
        self.rooms.entry(room.to_owned()).or_default()
    }

    fn notice(&mut self, text: String) {
        let current = self.current.clone();
        let (lines, _) = self.lines(&current);
        lines.push_back(format!("* {text}"));
        if lines.len() > KEEP {
            lines.pop_front();
        }
    }

    fn apply(&mut self, update: Update) {
        match update {
            Update::Message { room, from, text, older, .. } => {
                let shown = self.current == room;
                let (lines, unread) = self.lines(&room);
                let line = format!("{from}: {text}");
                if older {
                    lines.push_front(line);
                } else {
                    lines.push_back(line);
                    if !shown {
                        *unread += 1;
                    }
                }
                if lines.len() > KEEP {
                    lines.pop_front();
                }
            }
            Update::Connected { user } => self.status = format!("connected as {user}"),
            Update::Reconnecting { why, retry } => {
                self.status = format!("reconnecting in {:.1} s ({why})", retry.as_secs_f32())
            }
            Update::Current(target) => {
                self.current = target.clone();
                self.lines(&target).1 = 0;
            }
            Update::Room(room) => {
                self.lines(&room);
            }
            Update::Left(room) => {
                self.rooms.remove(&room);
                self.current.clear();
                self.notice(format!("left {room}"));
            }
            Update::Info(text) => self.notice(text),
            Update::Error(text) => self.notice(format!("error: {text}")),
            Update::Quit => {}
        }
    }

    fn next_room(&mut self) -> Option<String> {
        let names: Vec<&String> = self.rooms.keys().filter(|r| !r.is_empty()).collect();
        let i = names.iter().position(|r| **r == self.current).map_or(0, |i| (i + 1) % names.len().max(1));
        names.get(i).map(|r| r.to_string())
    }

    fn draw(&self, frame: &mut ratatui::Frame) {
        let [main, input, status] =
            Layout::vertical([Constraint::Min(3), Constraint::Length(3), Constraint::Length(1)]).areas(frame.area());
        let [rooms, conversation] = Layout::horizontal([Constraint::Length(24), Constraint::Min(10)]).areas(main);
        let items: Vec<ListItem> = self
            .rooms
            .iter()
            .filter(|(name, _)| !name.is_empty())
            .map(|(name, (_, unread))| {
                let style = if *name == self.current {
                    Style::default().add_modifier(Modifier::BOLD)
                } else {
                    Style::default()
                };
                let text = if *unread > 0 { format!("{name} ({unread})") } else { name.clone() };
                ListItem::new(Line::from(Span::styled(text, style)))
            })
            .collect();
        frame.render_widget(List::new(items).block(Block::default().borders(Borders::ALL).title("rooms")), rooms);
        let height = conversation.height.saturating_sub(2) as usize;
        let shown: Vec<Line> = self
            .rooms
            .get(&self.current)
            .map(|(lines, _)| {
                lines.iter().skip(lines.len().saturating_sub(height)).map(|l| Line::from(l.as_str())).collect()
            })
            .unwrap_or_default();
        let title = if self.current.is_empty() { "no room: /join ROOM".to_owned() } else { self.current.clone() };
        let pane =
            Paragraph::new(shown).wrap(Wrap { trim: false }).block(Block::default().borders(Borders::ALL).title(title));
        frame.render_widget(pane, conversation);
        let typed = Paragraph::new(format!("> {}", self.input)).block(Block::default().borders(Borders::ALL));
        frame.render_widget(typed, input);
        frame.render_widget(Paragraph::new(format!("{} · /help", self.status)), status);
    }
}

pub async fn run(commands: mpsc::Sender<Input>, mut updates: mpsc::Receiver<Update>) -> anyhow::Result<()> {
    let mut terminal = ratatui::init();
    let result = ui(&mut terminal, &commands, &mut updates).await;
    ratatui::restore();
    result
}

async fn ui(
    terminal: &mut ratatui::DefaultTerminal,
    commands: &mpsc::Sender<Input>,
    updates: &mut mpsc::Receiver<Update>,
) -> anyhow::Result<()> {
    let (keys_tx, mut keys) = mpsc::channel(64);
    std::thread::spawn(move || {
        while let Ok(e) = event::read() {
            if keys_tx.blocking_send(e).is_err() {
                return;
            }
        }
    });
    let mut screen = Screen { status: "connecting".into(), ..Screen::default() };
    loop {
        terminal.draw(|f| screen.draw(f))?;
        tokio::select! {
            update = updates.recv() => match update {
                None | Some(Update::Quit) => return Ok(()),
                Some(update) => screen.apply(update),
            },
            key = keys.recv() => {
                let Some(Event::Key(key)) = key else { continue };
                if key.kind == KeyEventKind::Release {
                    continue;
                }
                match key.code {
                    KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                        let _ = commands.send(Input::Quit).await;
                    }
                    KeyCode::Esc => {
                        let _ = commands.send(Input::Quit).await;
                    }
                    KeyCode::Enter => {
                        let line = std::mem::take(&mut screen.input);
                        let input = command::parse(&line);
                        if let Input::Join(room) = &input {
                            // Opened at once when known; the join makes sure.
                            if screen.rooms.contains_key(room) {
                                screen.apply(Update::Current(room.clone()));
                            }
                        }
                        let _ = commands.send(input).await;
                    }
                    KeyCode::Tab => {
                        if let Some(room) = screen.next_room() {
                            let _ = commands.send(Input::Join(room)).await;
                        }
                    }
                    KeyCode::Backspace => {
                        screen.input.pop();
                    }
                    KeyCode::Char(c) => screen.input.push(c),
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_of_other_rooms_count_as_unread_until_opened() {
        let mut s = Screen::default();
        s.apply(Update::Current("a".into()));
        let m = |room: &str| Update::Message {
            room: room.into(),
            seq: 1,
            from: "bob".into(),
            text: "hi".into(),
            older: false,
        };
        s.apply(m("a"));
        s.apply(m("b"));
        s.apply(m("b"));
        assert_eq!(s.rooms["a"].1, 0);
        assert_eq!(s.rooms["b"].1, 2);
        s.apply(Update::Current("b".into()));
        assert_eq!(s.rooms["b"].1, 0);
        assert_eq!(s.rooms["b"].0, ["bob: hi", "bob: hi"]);
    }
}
