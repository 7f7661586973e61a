"""Chat UIs: their housekeeping requests cost nothing, progress stays short, the prompt is the person's words."""
from __future__ import annotations

import json
import re
import sqlite3

import httpx
import openai
import pytest

from gateway.core.formats import FORMATS
from gateway.core.person_prompt import person_prompt
from gateway.core.progress import ProgressLines
from gateway.core.ui_tasks import title
from tests.support import ALPHA_KEY

WORDS = "a red fox running through fresh snow"
VIDEO_ID = "video_" + "ab" * 16
LINK = f"http://127.0.0.1:8080/v1/videos/{VIDEO_ID}/content/1900000000.c2lnbmF0dXJl.mp4"
GATEWAY_REPLY = (f"> ⏳ Queued\n\n> 🎬 Generating: 12%\n\n> 🎬 Generating: 57%\n\n✅ Video ready: [▶ Watch]({LINK})"
                 f'\n\n<video src="{LINK}" controls>\n{LINK}\n</video>')
OWUI_HISTORY = f"<chat_history>\nUSER: {WORDS}\nASSISTANT: {GATEWAY_REPLY}\n</chat_history>"
CONVO = [{"role": "user", "content": WORDS}, {"role": "assistant", "content": GATEWAY_REPLY}]
TRANSCRIPT = f"user: {WORDS}\nassistant: {GATEWAY_REPLY}"


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _system(system: str, user: str) -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


# One request per known template, worded as the UI's source sends it (long guideline blocks shortened).
TEMPLATES = [
    ("open-webui", "title", _user(
        "### Task:\nGenerate a concise title summarizing the chat history.\n### Guidelines:\n- Keep it short: 2-4"
        ' words is best.\n### Output:\nJSON format: { "title": "your concise title here" }\n### Chat History:\n'
        + OWUI_HISTORY), {"title": "Red Fox Running"}),
    ("open-webui", "title", _user(
        "### Task:\nGenerate a concise, 3-5 word title with an emoji summarizing the chat history.\n### Output:\n"
        'JSON format: { "title": "your concise title here" }\n### Chat History:\n' + OWUI_HISTORY),
     {"title": "Red Fox Running"}),
    ("open-webui", "tags", _user(
        "### Task:\nGenerate 1-3 broad tags categorizing the main themes of the chat history, along with 1-3 more"
        ' specific subtopic tags.\n\n### Output:\nJSON format: { "tags": ["tag1", "tag2", "tag3"] }\n\n'
        "### Chat History:\n" + OWUI_HISTORY), {"tags": ["Video"]}),
    ("open-webui", "follow_ups", _user(
        "### Task:\nSuggest 3-5 relevant follow-up questions or prompts that the user might naturally ask next in"
        ' this conversation as a **user**\n### Output:\nJSON format: { "follow_ups": ["Question 1?", "Question 2?",'
        ' "Question 3?"] }\n### Chat History:\n' + OWUI_HISTORY), {"follow_ups": []}),
    ("open-webui", "follow_ups", _user(
        "### Task:\nPredict 3-5 useful messages this user might naturally send next in the conversation.\n"
        '### Output:\nJSON format: { "follow_ups": ["Message 1", "Message 2"] }\n### Chat History:\n'
        + OWUI_HISTORY), {"follow_ups": []}),
    ("open-webui", "queries", _user(
        "### Task:\nAnalyze the chat history to determine the necessity of generating search queries, in the given"
        ' language.\n### Guidelines:\n- When generating search queries, respond in the format: { "queries":'
        ' ["query1", "query2"] }\n### Chat History:\n' + OWUI_HISTORY), {"queries": []}),
    ("open-webui", "autocomplete", _user(
        "### Task:\nYou are an autocompletion system. Continue the text in `<text>` based on the **completion"
        ' type** in `<type>`.\n### **Output Rules**:\n- Respond only in JSON format: `{ "text": "<your_completion>"'
        " }`.\n### Context:\n" + OWUI_HISTORY + "\n<type>General</type>\n<text>a red fox</text>\n#### Output:\n"),
     {"text": ""}),
    ("open-webui", "emoji", _user(
        "Your task is to reflect the speaker's likely facial expression through a fitting emoji. Interpret emotions"
        " from the message and reflect their facial expression using fitting, diverse emojis.\n\n"
        f"Message: ```{WORDS}```"),
     "🎬"),
    ("open-webui", "image_prompt", _user(
        "### Task:\nGenerate a detailed prompt for am image generation task based on the given language and"
        ' context.\n### Output:\nStrictly return in JSON format:\n{\n    "prompt": "Your detailed description here."'
        "\n}\n\n### Chat History:\n" + OWUI_HISTORY), {"prompt": WORDS}),
    ("librechat", "title", _user(
        "Provide a concise, 5-word-or-less title for the conversation, using title case conventions. Only return"
        f" the title itself.\n\nConversation:\nUser: {WORDS}\nAI: {GATEWAY_REPLY}"), "Red Fox Running"),
    ("librechat", "title", _user(
        "Analyze this conversation and provide:\n1. The detected language of the conversation\n2. A concise title"
        f" in the detected language (5 words or less, no punctuation or quotation)\n\nUser: {WORDS}\nAI: ok"),
     {"language": "English", "title": "Red Fox Running"}),
    ("librechat", "summary", [*CONVO, {"role": "user", "content": (
        "Hold on, before you continue I need you to write me a checkpoint of everything so far. Your context window"
        " is filling up and this checkpoint replaces the messages above.\n\n## Checkpoint\n\n## Goal")}],
     f"The user asked for a video: {WORDS}\nLatest video: {VIDEO_ID}"),
    ("lobechat", "title", _system(
        "You are a professional conversation summarizer. Generate a concise title that captures the essence of the"
        " conversation.\n\nRules:\n- Output ONLY the title text\n- Use the language specified by the locale code:"
        " en-US", TRANSCRIPT), "Red Fox Running"),
    ("lobechat", "summary", _system(
        "You're an assistant who's good at extracting key takeaways from conversations and summarizing them.",
        f"<chat_history>\n{TRANSCRIPT}\n</chat_history>\n\nPlease summarize the above conversation and retain key"
        " information."), f"The user asked for a video: {WORDS}"),
    ("nextchat", "title", [*CONVO, {"role": "user", "content": (
        "Please generate a four to five word title summarizing our conversation without any lead-in, punctuation,"
        " quotation marks, periods, symbols, bold text, or additional text. Remove enclosing quotation marks.")}],
     "Red Fox Running"),
    ("nextchat", "title", [{"role": "user", "content": "雪地里奔跑的红狐狸"}, {"role": "user", "content": (
        "使用四到五个字直接返回这句话的简要主题，不要解释、不要标点、不要语气词、不要多余文本，不要加粗，如果没有主题，请直接返回“闲聊”")}],
     "雪地里奔跑的红狐狸"),
    ("nextchat", "summary", [*CONVO, {"role": "user", "content": (
        "Summarize the discussion briefly in 200 words or less to use as a prompt for future context.")}],
     f"The user asked for a video: {WORDS}\nLatest video: {VIDEO_ID}"),
    ("cherry-studio", "title", [{"role": "system", "content": (
        "You are an assistant skilled in conversation. You need to summarize the user's conversation into a title"
        " within 10 words. The language of the title should be consistent with the user's primary language.")},
        *CONVO], "Red Fox Running"),
    ("cherry-studio", "search", _user(
        "You are an AI question rephraser. Your role is to rephrase follow-up queries from a conversation into"
        " standalone queries that can be used by another LLM to retrieve information.\n<conversation>\n"
        f"{TRANSCRIPT}\n</conversation>\nFollow up question: {WORDS}\nRephrased question:"),
     "<websearch>\n<question>\nnot_needed\n</question>\n</websearch>\n"
     "<knowledge>\n<question>\nnot_needed\n</question>\n</knowledge>"),
    ("chatbox", "title", _user(
        "Based on the chat history, give this conversation a name.\nKeep it short - 10 characters max, no quotes."
        f"\nUse English.\nJust provide the name, nothing else.\n\nHere's the conversation:\n\n```\nuser: {WORDS}\n```"),
     "Red Fox Running"),
]
IDS = [f"{ui}-{task}-{i}" for i, (ui, task, _, _) in enumerate(TEMPLATES)]


def sdk(gateway, key: str = ALPHA_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)


def upstream_calls(simulator) -> list[dict]:
    return httpx.get(simulator.url + "/_sim/calls").json()["calls"]


def ledger_outcomes(gateway) -> list[str]:
    path = gateway.raw["storage"]["database"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT outcome FROM ledger ORDER BY time")]


def check(reply: str, expected: str | dict) -> None:
    if isinstance(expected, dict):
        assert json.loads(reply) == expected
    else:
        assert reply == expected


@pytest.mark.parametrize(("ui", "task", "messages", "expected"), TEMPLATES, ids=IDS)
def test_every_known_template_is_answered_without_a_video(gateway, simulator, ui, task, messages, expected):
    client = sdk(gateway)
    raw = client.chat.completions.with_raw_response.create(model="sora-2", messages=messages)
    assert raw.headers["x-ui-task"] == f"{ui}/{task}"
    completion = raw.parse()
    assert completion.choices[0].finish_reason == "stop"
    check(completion.choices[0].message.content, expected)
    assert completion.usage.model_extra["cost_usd"] == 0
    chunks = list(client.chat.completions.create(model="sora-2", messages=messages, stream=True,
                                                 stream_options={"include_usage": True}))
    check("".join(c.choices[0].delta.content or "" for c in chunks if c.choices), expected)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.model_extra["cost_usd"] == 0
    assert upstream_calls(simulator) == []
    assert ledger_outcomes(gateway) == ["ui_task", "ui_task"]


def test_housekeeping_is_free_in_usage_and_counted_in_metrics(gateway, simulator):
    client = sdk(gateway)
    for ui, task, messages, _ in TEMPLATES[:3]:
        client.chat.completions.create(model="sora-2", messages=messages)
    client.chat.completions.create(model="sora-2", messages=[{"role": "user", "content": WORDS}])
    usage = httpx.get(gateway.url + "/v1/usage", headers={"authorization": f"Bearer {ALPHA_KEY}"}).json()
    assert usage["total"]["requests"] == 4 and usage["total"]["videos"] == 1
    assert usage["total"]["cost_usd"] == pytest.approx(0.4)  # the video only
    metrics = httpx.get(gateway.url + "/metrics").text
    assert 'sora_gateway_ui_tasks_total{task="title",ui="open-webui"} 2.0' in metrics
    assert 'sora_gateway_ui_tasks_total{task="tags",ui="open-webui"} 1.0' in metrics
    assert len([c for c in upstream_calls(simulator) if c["method"] == "POST"]) == 1


def test_structured_output_by_tool_call_gets_a_tool_call(gateway, simulator):
    """LibreChat's structured title goes through a function call when the model is asked for one."""
    messages = TEMPLATES[10][2]
    tools = [{"type": "function", "function": {"name": "extract", "parameters": {"type": "object"}}}]
    choice = {"type": "function", "function": {"name": "extract"}}
    completion = sdk(gateway).chat.completions.create(model="sora-2", messages=messages, tools=tools,
                                                      tool_choice=choice)
    [call] = completion.choices[0].message.tool_calls
    assert completion.choices[0].finish_reason == "tool_calls" and call.function.name == "extract"
    assert json.loads(call.function.arguments) == {"language": "English", "title": "Red Fox Running"}
    chunks = list(sdk(gateway).chat.completions.create(model="sora-2", messages=messages, tools=tools,
                                                       tool_choice=choice, stream=True))
    arguments = "".join(t.function.arguments or "" for c in chunks for t in c.choices[0].delta.tool_calls or [])
    assert json.loads(arguments)["title"] == "Red Fox Running"
    assert upstream_calls(simulator) == []


def test_generate_mode_makes_videos_of_housekeeping_but_never_of_the_gateways_own_text(start_gateway, simulator):
    gateway = start_gateway(simulator, chat={"ui_tasks": "generate"})
    completion = sdk(gateway).chat.completions.create(model="sora-2", messages=TEMPLATES[3][2])
    assert completion.model_extra["video"]["status"] == "completed"
    [job] = simulator.app.state.sim.videos.values()
    assert WORDS in job.prompt and "Suggest 3-5 relevant follow-up questions" in job.prompt
    for written in ("Queued", "Generating", "Video ready", "<video", "/v1/videos/", VIDEO_ID):
        assert written not in job.prompt


def test_open_webui_rag_template_makes_a_video_of_the_persons_words(gateway, simulator):
    rag = ("### Task:\nRespond to the user query using the provided context, incorporating inline citations in the"
           " format [id] **only when the <source> tag includes an explicit id attribute**.\n\n### Guidelines:\n"
           "- If you don't know the answer, clearly state that.\n\n<context>\n<source id=\"1\">Foxes live in"
           f" snowy forests.</source>\n</context>\n\n<user_query>\n{WORDS}\n</user_query>")
    completion = sdk(gateway).chat.completions.create(model="sora-2", messages=_user(rag))
    assert completion.model_extra["video"]["status"] == "completed"
    [job] = simulator.app.state.sim.videos.values()
    assert job.prompt == WORDS
    video = sdk(gateway).videos.retrieve(completion.model_extra["video"]["id"])
    assert video.prompt == WORDS


def test_rag_template_as_a_system_message_is_not_guidance(gateway, simulator):
    rag = ("### Task:\nRespond to the user query using the provided context.\n\n<context>\nnotes\n</context>\n\n"
           f"<user_query>\n{WORDS}\n</user_query>")
    sdk(gateway).chat.completions.create(model="sora-2", messages=_system(rag, WORDS))
    [job] = simulator.app.state.sim.videos.values()
    assert job.prompt == WORDS


def test_a_follow_up_message_never_carries_the_gateways_earlier_reply(gateway, simulator):
    messages = [{"role": "system", "content": f"Cinematic.\n\n{GATEWAY_REPLY}"}, *CONVO,
                {"role": "user", "content": f"{GATEWAY_REPLY}\n\nthe same fox at night"}]
    sdk(gateway).chat.completions.create(model="sora-2", messages=messages)
    [job] = simulator.app.state.sim.videos.values()
    assert job.prompt == "Cinematic.\n\nthe same fox at night"


def test_a_message_of_only_the_gateways_own_text_is_refused(gateway, simulator):
    with pytest.raises(openai.BadRequestError) as err:
        sdk(gateway).chat.completions.create(model="sora-2", messages=[{"role": "user", "content": GATEWAY_REPLY}])
    assert "text prompt describing the video" in err.value.message
    assert upstream_calls(simulator) == []


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_everything_the_formats_write_is_stripped_from_prompts(fmt):
    f = FORMATS[fmt]
    written = [f.queued, f.progress(42.5), f.estimate(42.5), f.ready(LINK),
               f.refused("moderation_blocked: not allowed")]
    if f.queued_at is not None:
        written.append(f.queued_at(3))
    assert person_prompt([], "".join(written) + "\n\na fox at night") == "a fox at night"


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_progress_lines_stay_about_a_dozen_however_many_steps(fmt):
    lines = ProgressLines(FORMATS[fmt], 10)
    written = [line for status, p in [("queued", 0.0)] * 5 + [("in_progress", p / 4) for p in range(401)]
               if (line := lines.line(status, p)) is not None]
    assert written[0] == FORMATS[fmt].queued and len(written) == 12
    assert ProgressLines(FORMATS[fmt], 25).line("in_progress", 3.0) is not None


def test_a_long_job_streams_a_dozen_lines_and_every_step_in_the_video_object(start_simulator, start_gateway):
    slow = start_simulator(duration_s=3.0)
    gateway = start_gateway(slow)
    chunks = list(sdk(gateway).chat.completions.create(model="sora-2", stream=True, messages=_user(WORDS)))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    shown = [int(p) for p in re.findall(r"> 🎬 Generating: (\d+)%", text)]
    assert 1 <= len(shown) <= 11 and text.count("> ⏳ Queued") <= 1
    assert [p // 10 for p in shown] == sorted(set(p // 10 for p in shown))  # one line per multiple passed
    steps = [c.model_extra["video"]["progress"] for c in chunks]
    assert set(shown) <= set(steps) and steps == sorted(steps) and steps[-1] == 100
    assert len(set(steps)) >= len(shown)


@pytest.mark.parametrize(("words", "expected"), [
    ("make a video of a red fox in snow", "Red Fox in Snow"),
    ("a drone shot over the alps at sunset with clouds", "Drone Shot over the Alps"),
    ("a lighthouse at dawn", "Lighthouse at Dawn"),
    ("雪地里奔跑的红狐狸，电影感", "雪地里奔跑的红狐狸"),
    ("", "Video"),
])
def test_titles_are_short_and_drawn_from_the_persons_words(words, expected):
    assert title(words) == expected
