"""The web page (Gradio): Learn, Generate, Score, each calling ``jobs.AppSession``.

Every job that uses the model (learning, generating, scoring) runs in one queue, one at a
time; Gradio shows a waiting job its place in the queue.
"""

from __future__ import annotations

import threading
import typing

import gradio as gr

from ..config import TrainConfig
from ..errors import UserError
from ..models.plugins import bundled_subjects, lab_of
from ..subject import SUBJECT_FILENAME
from .jobs import (
    SIDE_BY_SIDE,
    AppSession,
    TrainingStoppedByUser,
    advanced_fields,
    page_terms,
    schedule_controls,
    schedule_settings,
    training_defaults,
)

#: the queue every job on the device waits in
DEVICE = "device"
SUBJECT_COLUMNS = ["subject", "state", "steps", "base", "named by"]


def _subject_rows(session: AppSession) -> list[list]:
    return [[e.name, e.state, e.step, e.base, e.words] for e in session.workspace.subjects()] or [
        ["", "no subjects yet", "", "", ""]
    ]


def _advanced_inputs(base: str) -> list[gr.components.Component]:
    """One input per TrainConfig field the main panel does not set, with its help text."""
    hints = typing.get_type_hints(TrainConfig)
    defaults = training_defaults(base)
    inputs = []
    for f in advanced_fields():
        label, info = f.name.replace("_", " "), f.metadata.get("help", "")
        value = defaults[f.name]
        kind = hints[f.name]
        elem_id = f"adv-{f.name.replace('_', '-')}"
        if kind is bool:
            inputs.append(gr.Checkbox(value=value, label=label, info=info, elem_id=elem_id))
        elif kind in (int, float):
            inputs.append(gr.Number(value=value, label=label, info=info, elem_id=elem_id))
        elif f.metadata.get("repeat"):  # items that may hold commas (prompts): a line each
            text = "\n".join(value or [])
            inputs.append(
                gr.Textbox(
                    value=text, label=label, info=f"{info} (one per line)", lines=2, elem_id=elem_id
                )  # fmt: skip
            )
        else:  # optional numbers, text, lists and dicts: text, empty for the default
            if isinstance(value, list):
                value = ", ".join(value)
            elif isinstance(value, dict):
                value = ", ".join(f"{k}={v}" for k, v in value.items())
            text = "" if value is None else str(value)
            inputs.append(gr.Textbox(value=text, label=label, info=info, elem_id=elem_id))
    return inputs


def schedule_inputs(schedule: type | None = None) -> list[gr.components.Component]:
    """One input per setting of the weight schedule (``jobs.schedule_controls``): the
    paper's as sliders, the others folded away below them."""
    controls = schedule_controls() if schedule is None else schedule_controls(schedule)
    inputs = [_input(c) for c in controls if c.paper]
    with gr.Accordion("more ways to schedule the module (not in the paper)", open=False):
        inputs += [_input(c) for c in controls if not c.paper]
    return inputs


def _input(control) -> gr.components.Component:
    elem_id = control.name.replace("_", "-")
    if control.kind == "slider":
        return gr.Slider(
            control.minimum,
            control.maximum,
            control.default,
            step=control.step,
            label=control.label,
            elem_id=elem_id,
        )
    if control.kind == "checkbox":
        return gr.Checkbox(value=control.default, label=control.label, elem_id=elem_id)
    return gr.Number(value=control.default, label=control.label, elem_id=elem_id)


def _number(text: str, kind: type, label: str):
    """A number typed into a text box; empty is ``None`` (the model's default)."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        raise UserError(
            f"{label} must be a number, got {text!r}; leave it empty for the model's"
        ) from None


def _user_errors(exc: BaseException) -> None:
    """A ``UserError`` becomes the page's error message; anything else is a bug, raised."""
    if isinstance(exc, UserError):
        raise gr.Error(page_terms(str(exc)), duration=None) from None
    raise exc


def build_app(session: AppSession) -> gr.Blocks:
    lab = lab_of(session.base)
    bundled_by_name = bundled_subjects()
    with gr.Blocks(title="CustomCrafter") as demo:
        gr.Markdown(
            "# CustomCrafter\nTeach a video model your subject from a few photos, then make "
            f"videos of it. Base model: **{session.base}**; files go to "
            f"`{session.workspace.root}`."
        )
        with gr.Tab("Learn", id="learn-tab"):
            with gr.Row():
                with gr.Column(scale=3):
                    bundled = gr.Dropdown(
                        ["", *bundled_by_name],
                        value="",
                        label="bundled subject (the lab models')",
                        elem_id="bundled",
                    )
                    photos = gr.File(
                        label="photos of the subject (3 to 10)",
                        file_count="multiple",
                        file_types=["image"],
                        elem_id="photos",
                    )
                    name = gr.Textbox("my-subject", label="subject name", elem_id="subject-name")
                    class_word = gr.Textbox("dog", label="class word", elem_id="class-word")
                    instance_prompt = gr.Textbox(
                        "a <new1> dog",
                        label="prompt with the new token",
                        info="the subject as a new token before its class word",
                        elem_id="instance-prompt",
                    )
                    class_prompt = gr.Textbox(
                        "a dog",
                        label="class prompt (prior preservation)",
                        elem_id="class-prompt",
                    )
                    with gr.Accordion(
                        "advanced: the rest of the training settings"
                        + (f" (the {lab.name} recipe)" if lab is not None else " (the paper's)"),
                        open=False,
                        elem_id="advanced",
                    ):
                        advanced = _advanced_inputs(session.base)
                    retrain = gr.Checkbox(
                        label="train again (replace a subject already learnt)", elem_id="retrain"
                    )
                    with gr.Row():
                        learn_button = gr.Button("Learn", variant="primary", elem_id="learn")
                        stop_button = gr.Button("Stop", elem_id="stop")
                    status = gr.Markdown(elem_id="learn-status")
                    samples = gr.Image(
                        label="latest samples (--validation-prompt, in the advanced settings)",
                        type="filepath",
                        interactive=False,
                        elem_id="learn-samples",
                    )
                with gr.Column(scale=2):
                    gr.Markdown("### Subjects in the output folder")
                    subjects = gr.Dataframe(
                        _subject_rows(session),
                        headers=SUBJECT_COLUMNS,
                        interactive=False,
                        elem_id="subjects",
                    )

        with gr.Tab("Generate", id="generate-tab"):
            with gr.Row():
                with gr.Column(scale=2):
                    subject = gr.Dropdown(
                        session.workspace.learnt(), label="subject", elem_id="subject"
                    )
                    prompt = gr.Textbox(
                        "a <new1> dog running on the beach",
                        label="prompts, one a line (the first is shown here, all in the gallery)",
                        lines=2,
                        elem_id="prompt",
                    )
                    weights = schedule_inputs()
                    with gr.Row():
                        seed = gr.Number(0, label="seed", precision=0, elem_id="seed")
                        steps = gr.Textbox(
                            "", label="steps", placeholder="the model's", elem_id="steps"
                        )
                        guidance = gr.Textbox(
                            "", label="guidance", placeholder="the model's", elem_id="guidance"
                        )
                    side_by_side = gr.Checkbox(
                        label="side by side: base model, constant weight 1.0 and DWVS",
                        elem_id="side-by-side",
                    )
                    generate_button = gr.Button("Generate", variant="primary", elem_id="generate")
                with gr.Column(scale=3):
                    with gr.Row():
                        videos = [
                            gr.Video(label=label, elem_id=f"video-{i}", visible=label == "DWVS")
                            for i, label in enumerate(SIDE_BY_SIDE)
                        ]
                    curve = gr.Image(
                        label="the subject module's weight at each step",
                        type="filepath",
                        elem_id="weight-curve",
                    )
                    downloads = gr.File(
                        label="downloads: mp4, gif and the subject file",
                        file_count="multiple",
                        elem_id="downloads",
                    )
            gallery = gr.Gallery(
                [str(p) for p in session.workspace.videos()],
                label="gallery: what the app has generated",
                columns=6,
                elem_id="gallery",
            )

        with gr.Tab("Score", id="score-tab"):
            gr.Markdown(
                "The paper's metrics for a generated video against its subject's photos "
                "(CLIP-T, CLIP-I with `--clip`, DINO-I with `--dino`; motion always), and on "
                "a lab model (the shapes model) what its world's detectors read."
            )
            scored = gr.Dropdown(
                [p.name for p in session.workspace.videos()],
                label="generated video",
                elem_id="scored-video",
                # videos made after the page loaded are offered too (checked when scored)
                allow_custom_value=True,
            )
            score_button = gr.Button("Score", elem_id="score")
            scores = gr.JSON(label="scores", elem_id="scores")

        # --- events ----------------------------------------------------------------------------
        def pick_bundled(choice):
            if not choice:
                return gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
            chosen = bundled_by_name[choice]
            files = sorted(str(p) for p in chosen.folder.iterdir() if p.suffix == ".png")
            word = chosen.class_word
            return files, choice, word, f"a <new1> {word}", f"a {word}"

        bundled.change(
            pick_bundled,
            bundled,
            [photos, name, class_word, instance_prompt, class_prompt],
            queue=False,
        )
        class_word.input(
            lambda w: (f"a <new1> {w.strip()}", f"a {w.strip()}"),
            class_word,
            [instance_prompt, class_prompt],
            queue=False,
            trigger_mode="always_last",  # while typing: the last keystroke's value wins
        )

        def learn(name, files, instance, klass, again, *values, progress=gr.Progress()):
            paths = [getattr(f, "name", f) for f in files or []]
            entries = dict(zip([f.name for f in advanced_fields()], values, strict=True))
            state: dict = {"step": 0, "total": 0, "logs": {}}
            result: dict = {}

            def on_step(step, total, logs):
                state.update(step=step, total=total, logs=logs)

            def work():
                try:
                    result["message"] = session.learn(
                        name, paths, instance, klass, entries, on_step, retrain=again
                    )
                except BaseException as exc:  # noqa: BLE001 - reported on the page below
                    result["error"] = exc

            thread = threading.Thread(target=work, daemon=True)
            thread.start()
            try:
                while thread.is_alive():
                    thread.join(0.5)
                    if state["total"]:
                        loss = state["logs"].get("loss")
                        text = f"step {state['step']} of {state['total']}"
                        if loss is not None:
                            text += f", loss {loss:.4f}"
                        progress((state["step"], state["total"]), desc=text)
                        sheet = session.workspace.latest_samples(name)
                        shown = gr.update(value=str(sheet)) if sheet else gr.update()
                        yield f"training: {text}", gr.update(), gr.update(), shown
            finally:  # the job cancelled (page closed, queue cancelled): stop it, then end
                if thread.is_alive():
                    session.stop()
                    thread.join()
            learnt = gr.update(choices=session.workspace.learnt())
            sheet = session.workspace.latest_samples(name)
            shown = gr.update(value=str(sheet)) if sheet else gr.update()
            if isinstance(result.get("error"), TrainingStoppedByUser):
                yield f"stopped: {result['error']}", _subject_rows(session), learnt, shown
                return
            if "error" in result:
                _user_errors(result["error"])
            yield result["message"], _subject_rows(session), learnt, shown

        learn_button.click(
            learn,
            [name, photos, instance_prompt, class_prompt, retrain, *advanced],
            [status, subjects, subject, samples],
            concurrency_id=DEVICE,
            concurrency_limit=1,
        )
        stop_button.click(session.stop, None, None, queue=False)

        settings = [c.name for c in schedule_controls()]  # in the order of `weights`

        def generate(subject, prompt, seed, steps, guidance, both, *values, progress=gr.Progress()):
            def on_step(i, total):
                progress((i, total), desc="sampling")

            schedule = schedule_settings(dict(zip(settings, values, strict=True)))
            try:
                out = session.generate(
                    subject, prompt, seed=int(seed or 0), steps=_number(steps, int, "steps"),
                    guidance=_number(guidance, float, "guidance"), side_by_side=both,
                    on_step=on_step, **schedule,
                )  # fmt: skip
            except BaseException as exc:  # noqa: BLE001
                _user_errors(exc)
            made = {label: mp4 for label, index, mp4, _ in out.videos if index == 0}
            updates = [
                gr.update(value=str(made[label]) if label in made else None, visible=label in made)
                for label in SIDE_BY_SIDE
            ]
            files = [str(p) for _, _, mp4, gif in out.videos for p in (mp4, gif)]
            files.append(str(session.workspace.subject_dir(subject) / SUBJECT_FILENAME))
            made_here = session.workspace.videos()
            scorable = gr.update(choices=[p.name for p in made_here])
            return (*updates, str(out.curve), files, [str(p) for p in made_here], scorable)

        generate_button.click(
            generate,
            [subject, prompt, seed, steps, guidance, side_by_side, *weights],
            [*videos, curve, downloads, gallery, scored],
            concurrency_id=DEVICE,
            concurrency_limit=1,
        )

        def score(name):
            if not name:
                raise gr.Error("pick a generated video to score")
            if name not in {p.name for p in session.workspace.videos()}:
                raise gr.Error(f"no generated video {name!r} in {session.workspace.videos_dir}")
            try:
                return session.score(session.workspace.videos_dir / name)
            except BaseException as exc:  # noqa: BLE001
                _user_errors(exc)

        score_button.click(score, scored, scores, concurrency_id=DEVICE, concurrency_limit=1)

        def refresh():
            videos = session.workspace.videos()
            return (
                _subject_rows(session),
                gr.update(choices=session.workspace.learnt()),
                [str(p) for p in videos],
                gr.update(choices=[p.name for p in videos]),
            )

        demo.load(refresh, None, [subjects, subject, gallery, scored], queue=False)
    demo.queue(default_concurrency_limit=1)
    return demo
