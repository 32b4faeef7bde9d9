// Generated from the Rust types of confab-protocol (protocol/src) by its
// `typescript` tests; do not edit. Regenerate with
// UPDATE_EXPECT=1 cargo test -p confab-protocol typescript

import type { HttpErrorBody, Op, Reply, RequestId, ServerEvent } from "../src/protocol.gen.ts";

/** Requests the server's decoder accepts, by op. */
export const requests = {
  ping: {"op":"ping","id":1},
  join: {"op":"join","id":2,"room":"general"},
  leave: {"op":"leave","id":3,"room":"general"},
  rooms: {"op":"rooms","id":4},
  send: {"op":"send","id":5,"room":"general","text":"hello","cid":"c-5"},
  send_dm: {"op":"send","id":"dm-6","to":"bob","text":"psst","cid":"c-6"},
  history: {"op":"history","id":7,"room":"general","before":42,"limit":20},
  history_newest: {"op":"history","id":8,"room":"general"},
  sync: {"op":"sync","id":9,"rooms":{"general":40,"dm:alice:bob":0},"limit":100},
  typing: {"op":"typing","id":10,"room":"general"},
  read: {"op":"read","id":11,"room":"general","seq":42},
  presence: {"op":"presence","id":12,"room":"dm:alice:bob"},
  create: {"op":"create","id":20,"room":"team","visibility":"private","name":"The team"},
  invite: {"op":"invite","id":21,"room":"team","user":"bob"},
  kick: {"op":"kick","id":22,"room":"team","user":"dave","reason":"spam"},
  ban: {"op":"ban","id":23,"room":"team","user":"dave"},
  unban: {"op":"unban","id":24,"room":"team","user":"dave"},
  mute: {"op":"mute","id":25,"room":"team","user":"dave","until":1767229200},
  unmute: {"op":"unmute","id":26,"room":"team","user":"dave"},
  set_role: {"op":"set_role","id":27,"room":"team","user":"bob","role":"owner"},
  update_room: {"op":"update_room","id":28,"room":"team","topic":"Ship it"},
  room_info: {"op":"room_info","id":29,"room":"team"},
  members: {"op":"members","id":30,"room":"team","after":"alice","limit":2},
  directory: {"op":"directory","id":31,"query":"rust","limit":10},
  profile: {"op":"profile","id":33,"display_name":"Alice Liddell","avatar":"https://example.com/a.png"},
  users: {"op":"users","id":34,"users":["alice","nobody"]},
  send_reply: {"op":"send","id":35,"room":"general","text":"yes","cid":"c-35","reply_to":41},
  sync_changes: {"op":"sync","id":36,"rooms":{"general":40},"changes":{"general":38}},
  edit: {"op":"edit","id":37,"room":"general","seq":41,"text":"hey!"},
  edits: {"op":"edits","id":38,"room":"general","seq":41},
  delete: {"op":"delete","id":39,"room":"general","seq":41},
  react: {"op":"react","id":40,"room":"general","seq":41,"emoji":"👍"},
  react_remove: {"op":"react","id":41,"room":"general","seq":41,"emoji":"👍","remove":true},
  notify: {"op":"notify","id":42,"room":"general","level":"mentions"},
  update_room_retention: {"op":"update_room","id":43,"room":"team","retention_days":30},
  without_id: {"op":"ping"},
} satisfies Record<string, Op & { id?: RequestId }>;

/** Replies as the server encodes them, by the op they answer. */
export const replies = {
  ping: {"re":1,"ok":true},
  join: {"re":2,"ok":true,"room":"general","last_seq":41},
  leave: {"re":3,"ok":true},
  rooms: {"re":4,"ok":true,"rooms":[{"room":"general","last_seq":42,"read_seq":40,"unread":2,"mentions":1,"notify":"mentions"},{"room":"dm:alice:bob","last_seq":8,"read_seq":7,"unread":1,"mentions":0,"notify":"all"},{"room":"team","last_seq":3,"read_seq":0,"invited":true,"unread":0,"mentions":0,"notify":"all"}]},
  send: {"re":5,"ok":true,"room":"general","seq":42,"msg_id":"3-29","ts":1767225600042},
  send_dm: {"re":"dm-6","ok":true,"room":"dm:alice:bob","seq":8,"msg_id":"1-7","ts":1767225600008},
  history: {"re":7,"ok":true,"messages":[{"room":"general","seq":40,"msg_id":"3-27","from":"bob","text":"hi","ts":1767225600040,"cid":"c-40"},{"room":"general","seq":41,"msg_id":"3-28","from":"alice","text":"hey","ts":1767225600041,"cid":"c-41"}]},
  sync: {"re":9,"ok":true,"rooms":{"dm:alice:bob":{"messages":[],"more":false},"general":{"messages":[{"room":"general","seq":41,"msg_id":"3-28","from":"alice","text":"hey","ts":1767225600041,"cid":"c-41"}],"more":true}}},
  typing: {"re":10,"ok":true},
  read: {"re":11,"ok":true},
  presence: {"re":12,"ok":true,"online":["alice","bob"]},
  create: {"re":20,"ok":true,"room":"team","last_seq":0},
  invite: {"re":21,"ok":true},
  kick: {"re":22,"ok":true},
  ban: {"re":23,"ok":true},
  unban: {"re":24,"ok":true},
  mute: {"re":25,"ok":true},
  unmute: {"re":26,"ok":true},
  set_role: {"re":27,"ok":true},
  update_room: {"re":28,"ok":true},
  room_info: {"re":29,"ok":true,"room":"team","name":"The team","topic":"","visibility":"private","members":2,"role":"admin","retention_days":30},
  room_info_outsider: {"re":29,"ok":true,"room":"rust","name":"Rustaceans","topic":"","visibility":"public","members":42,"role":null},
  members: {"re":30,"ok":true,"members":[{"user":"bob","role":"owner"},{"user":"carol","role":"member"}],"next":"carol"},
  directory: {"re":31,"ok":true,"rooms":[{"room":"rust","name":"Rustaceans","topic":"","members":42}]},
  profile: {"re":33,"ok":true,"user":"alice","display_name":"Alice Liddell","avatar":"https://example.com/a.png"},
  users: {"re":34,"ok":true,"users":[{"user":"alice","display_name":"Alice Liddell","avatar":""}]},
  sync_changes: {"re":36,"ok":true,"rooms":{"general":{"messages":[],"more":false,"changed":[{"room":"general","seq":39,"msg_id":"3-26","from":"alice","text":"hey!","ts":1767225600039,"cid":"c-39","reply_to":40,"edited_ts":1767225600050,"reactions":[{"emoji":"👍","count":2,"users":["alice","bob"]}]}],"change_pos":45}}},
  edit: {"re":37,"ok":true,"room":"general","seq":41},
  edits: {"re":38,"ok":true,"versions":[{"text":"hey","ts":1767225600041}]},
  delete: {"re":39,"ok":true,"room":"general","seq":41},
  react: {"re":40,"ok":true,"room":"general","seq":41},
  notify: {"re":42,"ok":true},
  forbidden: {"re":32,"ok":false,"error":{"code":"forbidden","message":"admins only"}},
  error: {"re":13,"ok":false,"error":{"code":"not_member","message":"join room 'staff' first"}},
  error_without_id: {"ok":false,"error":{"code":"bad_request","message":"a request must be a JSON object"}},
} satisfies Record<string, Reply>;

/** Events as the server encodes them, by `ev`. */
export const events = {
  hello: {"ev":"hello","user":"alice","session":"s-1f","server":"confab-1","heartbeat_ms":25000},
  msg: {"ev":"msg","room":"general","seq":42,"msg_id":"3-29","from":"bob","text":"see you","ts":1767225600042,"cid":"c-42","prev_seq":41},
  msg_mention: {"ev":"msg","room":"general","seq":43,"msg_id":"3-2a","from":"bob","text":"@alice look","ts":1767225600043,"cid":"c-43","mentions":["alice"],"prev_seq":42},
  member: {"ev":"member","room":"general","user":"carol","action":"join"},
  member_kick: {"ev":"member","room":"general","user":"dave","action":"kick","by":"carol","reason":"spam"},
  member_role: {"ev":"member","room":"team","user":"bob","action":"role","by":"alice","role":"owner"},
  member_mute: {"ev":"member","room":"team","user":"dave","action":"mute","by":"alice","until":1767229200},
  room: {"ev":"room","room":"team","name":"The team","topic":"Ship it","visibility":"private","by":"alice","retention_days":30},
  typing: {"ev":"typing","room":"general","user":"bob"},
  read: {"ev":"read","room":"general","user":"bob","seq":42},
  presence: {"ev":"presence","user":"bob","online":false},
  bye: {"ev":"bye","reason":"server_restart"},
  edit: {"ev":"edit","room":"general","seq":41,"text":"hey!","edited_ts":1767225600050,"by":"alice","pos":44,"prev_pos":43},
  delete: {"ev":"delete","room":"general","seq":41,"by":"alice","pos":45,"prev_pos":44},
  react: {"ev":"react","room":"general","seq":41,"emoji":"👍","user":"bob","remove":false,"pos":43,"prev_pos":0},
  msg_reply: {"ev":"msg","room":"general","seq":46,"msg_id":"3-2d","from":"bob","text":"yes","ts":1767225600046,"cid":"c-46","reply_to":41,"prev_seq":42},
} satisfies Record<string, ServerEvent>;

/** HTTP error bodies. */
export const httpErrors = {
  taken: {"error":{"code":"taken","message":"the user name 'alice' is taken"}},
} satisfies Record<string, HttpErrorBody>;
