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
    "help": (
        "**Commands**\n\n"
        "- `!new [name]` — start a new chat room\n"
        "- `!chats` — list your chats\n"
        "- `!rename <name>` — rename this chat\n"
        "- `!archive` — archive this chat (asks `!yes`/`!no`)\n"
        "- `!agents` — list the agents\n"
        "- `!agent [id]` — show or switch the agent of this chat\n"
        "- `!clear` — start this chat's context afresh (asks `!yes`/`!no`)\n"
        "- `!save [name]` — save a snapshot of this chat's context\n"
        "- `!load` — list snapshots; answer with a number to load one\n"
        "- `!context` — what this chat is bound to\n"
        "- `!yes` / `!no` — answer a question\n\n"
        "Anything else goes to the agent."
    ),
    "unknown_command": "Unknown command `{command}`. Type `!help` for the list.",
    "usage": "Usage: `{usage}`",
    "new_created": "Created **{name}** ({chat_id}) with **{agent}**. I invited you to it.",
    "chats_header": "**Your chats**",
    "chats_line": "- {chat_id} — {name}{archived}{here}",
    "chats_archived": " (archived)",
    "chats_here": " ← this room",
    "chats_empty": "You have no chats yet. Type `!new` to start one.",
    "renamed": "Renamed this chat to **{name}**.",
    "archive_confirm": "Archive **{name}**? Answer `!yes` or `!no`.",
    "archived": "Archived **{name}**. It stays readable; `!new` starts a fresh chat.",
    "clear_confirm": (
        "Clear the context of this chat? The agent forgets this conversation. "
        "Answer `!yes` or `!no`."
    ),
    "cleared": "Cleared. This chat starts afresh (platform chat {platform_chat_id}).",
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
    "platform_error": "⚠️ The agent could not answer: {reason}. Please try again in a moment.",
    "platform_failed": "⚠️ The agent reported an error ({code}): {message}",
    "unmanaged_room": (
        "This room is not one of your Lambda chats. Your chats are in your Space "
        "**{space}**; type `!new` there to start another."
    ),
    "unmanaged_room_no_space": "This room is not one of your Lambda chats.",
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
    "help": (
        "**Команды**\n\n"
        "- `!new [имя]` — новый чат\n"
        "- `!chats` — список чатов\n"
        "- `!rename <имя>` — переименовать этот чат\n"
        "- `!archive` — архивировать чат (спросит `!yes`/`!no`)\n"
        "- `!agents` — список агентов\n"
        "- `!agent [id]` — показать или сменить агента этого чата\n"
        "- `!clear` — начать контекст заново (спросит `!yes`/`!no`)\n"
        "- `!save [имя]` — сохранить снимок контекста\n"
        "- `!load` — список снимков; ответьте номером, чтобы загрузить\n"
        "- `!context` — к чему привязан этот чат\n"
        "- `!yes` / `!no` — ответ на вопрос\n\n"
        "Всё остальное уходит агенту."
    ),
    "unknown_command": "Неизвестная команда `{command}`. Наберите `!help`.",
    "usage": "Использование: `{usage}`",
    "new_created": "Создан чат **{name}** ({chat_id}) с **{agent}**. Я пригласил вас в него.",
    "chats_header": "**Ваши чаты**",
    "chats_line": "- {chat_id} — {name}{archived}{here}",
    "chats_archived": " (в архиве)",
    "chats_here": " ← этот чат",
    "chats_empty": "У вас пока нет чатов. Наберите `!new`.",
    "renamed": "Чат переименован в **{name}**.",
    "archive_confirm": "Архивировать **{name}**? Ответьте `!yes` или `!no`.",
    "archived": "Чат **{name}** в архиве. `!new` начнёт новый.",
    "clear_confirm": (
        "Очистить контекст этого чата? Агент забудет разговор. Ответьте `!yes` или `!no`."
    ),
    "cleared": "Готово. Чат начат заново (чат платформы {platform_chat_id}).",
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
    "platform_error": "⚠️ Агент не смог ответить: {reason}. Попробуйте ещё раз чуть позже.",
    "platform_failed": "⚠️ Агент сообщил об ошибке ({code}): {message}",
    "unmanaged_room": (
        "Эта комната не из ваших чатов Lambda. Ваши чаты в пространстве **{space}**; "
        "наберите там `!new`."
    ),
    "unmanaged_room_no_space": "Эта комната не из ваших чатов Lambda.",
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
