"""Every user-visible string, in one place (English default, Russian too).

Strings are Markdown; the sender renders them to Matrix HTML.
"""

from __future__ import annotations

from typing import Literal

Locale = Literal["en", "ru"]

EN: dict[str, str] = {
    "welcome": (
        "Hi {name}! This is your first chat with **{agent}**. Your chats live in the Space "
        "**{space}**. Just write here to talk to the agent, or type `!help`."
    ),
    # `!help` is made from these: the header, one line per command (tasks/bot/table.py), the footer
    "help_header": "**Commands**",
    "help_footer": "Anything else goes to the agent.",
    "help_new": "`!new [name]` — start a new chat room",
    "help_chats": "`!chats` — list your chats",
    "help_rename": "`!rename <name>` — rename this chat",
    "help_archive": "`!archive` — archive this chat (asks `!yes`/`!no`)",
    "help_agents": "`!agents` — list the agents",
    "help_agent": "`!agent [id]` — show or switch the agent of this chat",
    "help_clear": "`!clear` — start this chat's context afresh (asks `!yes`/`!no`)",
    "help_save": "`!save [name]` — save a snapshot of this chat's context",
    "help_load": "`!load` — list snapshots; answer with a number to load one",
    "help_context": "`!context` — what this chat is bound to",
    "help_yes_no": "`!yes` / `!no` — answer a question",
    "unknown_command": "Unknown command `{command}`. Type `!help` for the list.",
    "usage": "Usage: `{usage}`",
    "new_created": "Created **{name}** ({chat_id}) with **{agent}**. I invited you to it.",
    "new_limit": (
        "You have {limit} open chats, the most this bot allows. `!archive` one you no "
        "longer need (it stays readable), then `!new` again."
    ),
    "chats_header": "**Your chats**",
    "chats_line": "- {chat_id} — {name}{archived}{left}{here}",
    "chats_archived": " (archived)",
    "chats_left": " (you left)",
    "chats_reinvited": (
        "I invited you back to {count} room(s) you had left; accept the invite to return, "
        "or decline it to stay out."
    ),
    "chats_here": " ← this room",
    "chats_empty": "You have no chats yet. Type `!new` to start one.",
    "renamed": "Renamed this chat to **{name}**.",
    "rename_empty": "That name has no visible characters. Type `!rename <name>` with a name.",
    "archive_confirm": "Archive **{name}**? Answer `!yes` or `!no`.",
    "archived": "Archived **{name}**. It stays readable; `!new` starts a fresh chat.",
    "clear_confirm": (
        "Clear the context of this chat? The agent forgets this conversation. "
        "Answer `!yes` or `!no`."
    ),
    "cleared": "Cleared. This chat starts afresh (platform chat {platform_chat_id}).",
    # The topic of each chat room (tasks/room_face.py), plain text.
    "room_topic": "{name} ({chat_id}) · agent: {agent} · platform chat {platform_chat_id}",
    "nothing_pending": "There is nothing to confirm.",
    "cancelled": "Cancelled.",
    "agents_header": "**Agents**",
    "agents_line": "- `{id}` — **{name}**{default}{current}: {description}",
    "agents_default": " (default)",
    "agents_current": " ← this chat",
    "agent_show": "This chat talks to **{name}** (`{id}`). `!agents` lists the others.",
    "agent_switched": (
        "This chat now talks to **{name}** (`{id}`), with a fresh context; new chats use it too."
    ),
    "agent_same": "This chat already talks to **{name}**.",
    "agent_unknown": "There is no agent `{id}`. Type `!agents` to see the list.",
    "agent_missing": (
        "The agent of this chat (`{id}`) is no longer available. Choose another one: type "
        "`!agents`, then `!agent <id>`."
    ),
    "agent_none": "This chat has no agent yet. Type `!agents`, then `!agent <id>`.",
    "selected_missing_new": (
        "Your selected agent (`{id}`) is no longer available, so no chat was created. Choose "
        "one: type `!agents`, then `!agent <id>`, then `!new` again."
    ),
    "selected_missing_default": (
        "Your selected agent (`{id}`) is no longer available, so this chat uses the default, "
        "**{name}**. To choose another: type `!agents`, then `!agent <id>`."
    ),
    "saved": "Saved snapshot **{name}** ({turns} turns).",
    "snapshots_header": "**Snapshots** — answer with a number to load one:",
    "snapshots_line": "{n}. {name} ({created_at}, {turns} turns)",
    "snapshots_empty": "No snapshots yet. `!save [name]` makes one.",
    "loaded": "Loaded **{name}** into this chat ({turns} turns).",
    "load_bad_choice": "Answer with a number from 1 to {count}, or `!no` to cancel.",
    "context": (
        "**This chat**\n\n"
        "- chat: {chat_id} — {name}\n"
        "- agent: **{agent}** (`{agent_id}`)\n"
        "- platform chat: {platform_chat_id}\n"
        "- turns: {turns}, snapshots: {snapshots}\n"
        "{details}"
    ),
    "platform_error": (
        "⚠️ The agent could not answer (`{code}`, ref `{ref}`). Please try again in a moment."
    ),
    "platform_failed": "⚠️ The agent reported an error (`{code}`, ref `{ref}`).",
    "platform_context_error": "- platform: unavailable (`{code}`, ref `{ref}`)\n",
    "turn_timeout": (
        "⚠️ The answer took too long and was stopped; what came so far stays. "
        "Ask again, perhaps in smaller steps."
    ),
    "answer_too_long": (
        "⚠️ The answer grew too long and was cut off. Ask for a shorter answer or for a part."
    ),
    "answer_too_large": (
        "⚠️ The homeserver refused {chars} characters of this answer as too large to show."
    ),
    "unmanaged_room": (
        "This room is not one of your Lambda chats. Your chats are in your Space "
        "**{space}**; type `!new` there to start another."
    ),
    "unmanaged_room_no_space": "This room is not one of your Lambda chats.",
    "foreign_room": (
        "This room is not one of your Lambda chats, so I will stay quiet here. Your chats are "
        "in your Space **{space}**."
    ),
    "foreign_room_no_space": (
        "This room is not one of your Lambda chats, so I will stay quiet here. Invite me to a "
        "direct chat to get started."
    ),
    "help_direct": (
        "Here, in our direct chat, `!help` and `!chats` work; everything else happens in your "
        "chat rooms in **{space}**."
    ),
    "rejoin_invited": "I invited you back to: {rooms}.",
    "not_allowed": (
        "You are no longer on this bot's allow list, so I will not answer here. Your rooms "
        "and chats are kept; ask the operator to let you back in."
    ),
    "archived_room": "This chat is archived. Type `!new` to start a fresh one.",
    "file_received": "📎 Got **{name}**. It goes to the agent with your next message.",
    "file_error": "⚠️ I could not take that file: {reason}",
    "undecryptable": (
        "⚠️ I could not read your message (it reached me encrypted without its key). "
        "Please send it again."
    ),
    "space_name": "Lambda — {name}",
    "chat_name": "Chat {index}",
}

RU: dict[str, str] = {
    "welcome": (
        "Привет, {name}! Это ваш первый чат с **{agent}**. Ваши чаты находятся в пространстве "
        "**{space}**. Просто пишите сюда, чтобы говорить с агентом, или наберите `!help`."
    ),
    "help_header": "**Команды**",
    "help_footer": "Всё остальное уходит агенту.",
    "help_new": "`!new [имя]` — новый чат",
    "help_chats": "`!chats` — список чатов",
    "help_rename": "`!rename <имя>` — переименовать этот чат",
    "help_archive": "`!archive` — архивировать чат (спросит `!yes`/`!no`)",
    "help_agents": "`!agents` — список агентов",
    "help_agent": "`!agent [id]` — показать или сменить агента этого чата",
    "help_clear": "`!clear` — начать контекст заново (спросит `!yes`/`!no`)",
    "help_save": "`!save [имя]` — сохранить снимок контекста",
    "help_load": "`!load` — список снимков; ответьте номером, чтобы загрузить",
    "help_context": "`!context` — к чему привязан этот чат",
    "help_yes_no": "`!yes` / `!no` — ответ на вопрос",
    "unknown_command": "Неизвестная команда `{command}`. Наберите `!help`.",
    "usage": "Использование: `{usage}`",
    "new_created": "Создан чат **{name}** ({chat_id}) с **{agent}**. Я пригласил вас в него.",
    "new_limit": (
        "У вас {limit} открытых чатов — больше бот не позволяет. Отправьте `!archive` в "
        "ненужном чате (он останется доступен для чтения), затем снова `!new`."
    ),
    "chats_header": "**Ваши чаты**",
    "chats_line": "- {chat_id} — {name}{archived}{left}{here}",
    "chats_archived": " (в архиве)",
    "chats_left": " (вы вышли)",
    "chats_reinvited": (
        "Я снова пригласил вас в комнаты, из которых вы вышли ({count}): примите приглашение, "
        "чтобы вернуться, или отклоните его."
    ),
    "chats_here": " ← этот чат",
    "chats_empty": "У вас пока нет чатов. Наберите `!new`.",
    "renamed": "Чат переименован в **{name}**.",
    "rename_empty": "В этом имени нет видимых символов. Наберите `!rename <имя>` с именем.",
    "archive_confirm": "Архивировать **{name}**? Ответьте `!yes` или `!no`.",
    "archived": "Чат **{name}** в архиве. `!new` начнёт новый.",
    "clear_confirm": (
        "Очистить контекст этого чата? Агент забудет разговор. Ответьте `!yes` или `!no`."
    ),
    "cleared": "Готово. Чат начат заново (чат платформы {platform_chat_id}).",
    "room_topic": "{name} ({chat_id}) · агент: {agent} · чат платформы {platform_chat_id}",
    "nothing_pending": "Подтверждать нечего.",
    "cancelled": "Отменено.",
    "agents_header": "**Агенты**",
    "agents_line": "- `{id}` — **{name}**{default}{current}: {description}",
    "agents_default": " (по умолчанию)",
    "agents_current": " ← этот чат",
    "agent_show": "Этот чат говорит с **{name}** (`{id}`). `!agents` — список остальных.",
    "agent_switched": "Теперь этот чат говорит с **{name}** (`{id}`), контекст новый.",
    "agent_same": "Этот чат уже говорит с **{name}**.",
    "agent_unknown": "Агента `{id}` нет. Наберите `!agents`.",
    "agent_missing": (
        "Агент этого чата (`{id}`) больше недоступен. Выберите другого: `!agents`, "
        "затем `!agent <id>`."
    ),
    "agent_none": "У этого чата нет агента. Наберите `!agents`, затем `!agent <id>`.",
    "selected_missing_new": (
        "Выбранный вами агент (`{id}`) больше недоступен, поэтому чат не создан. Выберите "
        "агента: `!agents`, затем `!agent <id>`, и снова `!new`."
    ),
    "selected_missing_default": (
        "Выбранный вами агент (`{id}`) больше недоступен, поэтому этот чат говорит с агентом "
        "по умолчанию, **{name}**. Чтобы выбрать другого: `!agents`, затем `!agent <id>`."
    ),
    "saved": "Снимок **{name}** сохранён ({turns} ходов).",
    "snapshots_header": "**Снимки** — ответьте номером, чтобы загрузить:",
    "snapshots_line": "{n}. {name} ({created_at}, {turns} ходов)",
    "snapshots_empty": "Снимков пока нет. `!save [имя]` создаст снимок.",
    "loaded": "Снимок **{name}** загружен ({turns} ходов).",
    "load_bad_choice": "Ответьте числом от 1 до {count} или `!no` для отмены.",
    "context": (
        "**Этот чат**\n\n"
        "- чат: {chat_id} — {name}\n"
        "- агент: **{agent}** (`{agent_id}`)\n"
        "- чат платформы: {platform_chat_id}\n"
        "- ходов: {turns}, снимков: {snapshots}\n"
        "{details}"
    ),
    "platform_error": (
        "⚠️ Агент не смог ответить (`{code}`, ref `{ref}`). Попробуйте ещё раз чуть позже."
    ),
    "platform_failed": "⚠️ Агент сообщил об ошибке (`{code}`, ref `{ref}`).",
    "platform_context_error": "- платформа: недоступна (`{code}`, ref `{ref}`)\n",
    "turn_timeout": (
        "⚠️ Ответ занял слишком много времени и был остановлен; то, что пришло, осталось. "
        "Спросите ещё раз, лучше по частям."
    ),
    "answer_too_long": (
        "⚠️ Ответ получился слишком длинным и был обрезан. Попросите ответ короче или по частям."
    ),
    "answer_too_large": (
        "⚠️ Сервер отказался показать {chars} символов этого ответа: слишком большое сообщение."
    ),
    "unmanaged_room": (
        "Эта комната не из ваших чатов Lambda. Ваши чаты в пространстве **{space}**; "
        "наберите там `!new`."
    ),
    "unmanaged_room_no_space": "Эта комната не из ваших чатов Lambda.",
    "foreign_room": (
        "Эта комната не из ваших чатов Lambda, поэтому здесь я буду молчать. Ваши чаты в "
        "пространстве **{space}**."
    ),
    "foreign_room_no_space": (
        "Эта комната не из ваших чатов Lambda, поэтому здесь я буду молчать. Пригласите меня "
        "в личный чат, чтобы начать."
    ),
    "help_direct": (
        "Здесь, в нашем личном чате, работают `!help` и `!chats`; всё остальное — в ваших "
        "чатах в **{space}**."
    ),
    "rejoin_invited": "Я снова пригласил вас в: {rooms}.",
    "not_allowed": (
        "Вас больше нет в списке допущенных к этому боту, поэтому здесь я не отвечаю. Ваши "
        "комнаты и чаты сохранены; попросите оператора вернуть вам доступ."
    ),
    "archived_room": "Этот чат в архиве. Наберите `!new`, чтобы начать новый.",
    "file_received": "📎 Получен файл **{name}**. Он уйдёт агенту с вашим следующим сообщением.",
    "file_error": "⚠️ Не удалось принять файл: {reason}",
    "undecryptable": (
        "⚠️ Не удалось прочитать ваше сообщение (оно пришло зашифрованным без ключа). "
        "Пожалуйста, отправьте его ещё раз."
    ),
    "space_name": "Lambda — {name}",
    "chat_name": "Чат {index}",
}

CATALOGUES: dict[str, dict[str, str]] = {"en": EN, "ru": RU}


class Catalogue:
    """Looks up and formats a message for one locale; falls back to English."""

    def __init__(self, locale: str = "en") -> None:
        self.locale = locale if locale in CATALOGUES else "en"
        self._messages = CATALOGUES[self.locale]

    def __call__(self, key: str, **values: object) -> str:
        template = self._messages.get(key) or EN[key]
        return template.format(**values)
