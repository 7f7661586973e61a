"""The housekeeping requests chat UIs send to the model a person picked, as their sources word them.

Each entry is one template of one UI: the phrases that identify it (every pattern must match the task's text:
its system messages and its last user message) and the kind of answer it asks for (see `ui_tasks.ANSWERS`).
To support another template, add an entry; nothing else changes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class UiTemplate:
    ui: str
    task: str
    answer: str
    patterns: tuple[re.Pattern[str], ...]

    def matches(self, text: str) -> bool:
        return all(p.search(text) for p in self.patterns)


def _t(ui: str, task: str, answer: str, *patterns: str) -> UiTemplate:
    return UiTemplate(ui, task, answer, tuple(re.compile(p, re.IGNORECASE) for p in patterns))


_HISTORY = r"<chat_history>"
_TASK = r"### Task:\s*"

TEMPLATES: tuple[UiTemplate, ...] = (
    # Open WebUI: backend/open_webui/config.py, DEFAULT_*_PROMPT_TEMPLATE (older and current wordings)
    _t("open-webui", "title", "title_json",
       _TASK + r"Generate a concise\b[^\n]*\btitle\b[^\n]*summarizing the (chat history|content)", _HISTORY),
    _t("open-webui", "tags", "tags_json", _TASK + r"Generate 1-3 broad tags categorizing the main themes", _HISTORY),
    _t("open-webui", "follow_ups", "follow_ups_json",
       _TASK + r"(Suggest 3-5 relevant follow-up questions|Predict 3-5 useful messages)", r'"follow_ups"'),
    _t("open-webui", "queries", "queries_json",
       _TASK + r"Analyze the chat history to determine the necessity of generating search queries", r'"queries"'),
    _t("open-webui", "autocomplete", "autocomplete_json", _TASK + r"You are an autocompletion system", r"<text>"),
    _t("open-webui", "emoji", "emoji",
       r"Your task is to reflect the speaker's likely facial expression through a fitting emoji"),
    _t("open-webui", "image_prompt", "image_prompt_json",
       _TASK + r"Generate a detailed prompt for a[mn]? image generation task"),
    # LibreChat: its title prompts (completion and structured, src/utils/title.ts), summaries, older titleInstruction
    _t("librechat", "title", "title_text", r"concise, 5-word-or-less title for the conversation"),
    _t("librechat", "title", "title_language_json",
       r"Analyze this conversation and provide:\s*1\. The detected language of the conversation\s*"
       r"2\. A concise title"),
    _t("librechat", "summary", "summary_text",
       r"Hold on, before you continue I need you to write me a checkpoint of everything so far"),
    _t("librechat", "summary", "summary_text", r"Hold on again, update your checkpoint"),
    # LobeChat: packages/prompts/src/chains (summaryTitle, summaryHistory, summaryTags; src/prompts/chat.ts before)
    _t("lobechat", "title", "title_text",
       r"You are a professional conversation summarizer\. Generate a concise title"),
    _t("lobechat", "title", "title_text", r"需要将用户的会话总结为\s*10\s*个字以内的标题"),
    _t("lobechat", "summary", "summary_text",
       r"You're an assistant who's good at extracting key takeaways from conversations and summarizing them"),
    _t("lobechat", "tags", "tags_text", r"你是一名擅长会话标签总结的助理"),
    # NextChat: app/locales/en.ts and cn.ts, Store.Prompt.Topic and Summarize
    _t("nextchat", "title", "title_text", r"Please generate a four to five word title summarizing our conversation"),
    _t("nextchat", "title", "title_text", r"使用四到五个字直接返回这句话的简要主题"),
    _t("nextchat", "summary", "summary_text",
       r"Summarize (the|our) discussion briefly in 200 words or less to use as a prompt for future context"),
    _t("nextchat", "summary", "summary_text",
       r"Summarize the conversation in detail, (and use it as a context prompt|and don't miss any details)"),
    _t("nextchat", "summary", "summary_text", r"简要总结一下对话内容，用作后续的上下文提示"),
    # Cherry Studio: src/renderer/src/config/prompts.ts, SUMMARIZE_PROMPT and SEARCH_SUMMARY_PROMPT*
    _t("cherry-studio", "title", "title_text",
       r"You are an assistant skilled in conversation\. You need to summarize the user's conversation into a title"),
    _t("cherry-studio", "title", "title_text",
       r"You need to summarize the user's conversation into a title of no more than 10 words"),
    _t("cherry-studio", "search", "rephrase_xml",
       r"You are an AI question rephraser\. Your role is to rephrase follow-up queries"),
    # Chatbox: src/renderer/packages/prompts.ts, nameConversation
    _t("chatbox", "title", "title_text", r"Based on the chat history, give this conversation a name\."),
)

# Every template's first pattern in one expression: a request a person wrote is told apart in one search.
ANY_TEMPLATE = re.compile("|".join(f"(?:{t.patterns[0].pattern})" for t in TEMPLATES), re.IGNORECASE)
