"""The built-in assistant: reads each message with `understand` and answers from the salon's own data.

What it may do to the salon's calendar, and only when the client asked for it in so many words:
- book: only a time the client picked from the times it offered (by number, "второй", or the time itself);
- move: likewise, a new time picked from the offered ones;
- cancel: only after asking "Отменить запись …? 1 — да, 2 — нет" and reading a yes (any "no" keeps it);
- confirm a visit: only in answer to a reminder, on a clear yes ("да", "буду", "не отменяйте").
Everything else only reads. When a detail is missing it asks for that detail by name; a greeting never hides
the request that follows it, and every request of a message is answered, in the order it was made.

States: idle; choosing_service, choosing_slot (booking); cancelling, rescheduling (which booking);
confirming_cancel; choosing_new_slot (moving); reminder (the answer to a reminder); handover (a person has
the chat).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from shared.assistant import Reply, Turn, answers, notices
from shared.assistant.handover import STATE as HANDOVER
from shared.assistant.handover import hand_over, handed_over, tell_salon_late
from shared.assistant.notices import MENU, describe, offer_slots, salon_name, staff_name
from shared.assistant.tools import SalonTools
from shared.assistant.understanding import Understanding, Wish, understand
from shared.core.settings import get_settings
from shared.data.repositories.calendar import SlotTakenError

MENU_DIGITS = {"1": "price", "2": "book", "3": "my_bookings", "4": "cancel", "5": "masters", "6": "reschedule"}
CONTEXTS = {
    "reminder": "reminder",
    "confirming_cancel": "question",
    "choosing_slot": "slots",
    "choosing_new_slot": "slots",
}
NUMBERED_STATES = frozenset({"choosing_service", "choosing_slot", "cancelling", "rescheduling", "choosing_new_slot"})
KEPT_STATES = NUMBERED_STATES | {"reminder"}


@dataclass
class Answer:
    """The parts of one reply, one per request, and the state the last request leaves the chat in."""

    parts: list[str] = field(default_factory=list)
    state: str = "idle"
    data: dict[str, Any] = field(default_factory=dict)
    stateful: bool = False

    def say(self, text: str) -> None:
        if text:
            self.parts.append(text)

    def wait_for(self, reply: Reply) -> None:
        self.say(reply.text)
        self.state, self.data, self.stateful = reply.state, reply.data, True

    def reply(self) -> Reply:
        return Reply("\n\n".join(self.parts), self.state, self.data)


def _number(text: str) -> int | None:
    stripped = text.strip().rstrip(".)")
    return int(stripped) if stripped.isdigit() and len(stripped) <= 3 else None


class RuleBasedAssistant:
    """Answers from the salon's services, staff, schedules and bookings; no network needed."""

    def __init__(self) -> None:
        inbound = get_settings().inbound
        self.days_ahead = inbound.slot_days_ahead
        self.slots_offered = inbound.slots_offered

    # ---- one turn ----------------------------------------------------------------------------------
    def reply(self, turn: Turn, tools: SalonTools) -> Reply:
        text = turn.text.strip()
        state, data = turn.state, turn.data
        if handed_over(state, data, tools.now):
            return Reply("", state, data)  # a person has the chat: kept, not answered automatically
        if state == HANDOVER:
            state, data = "idle", {}
        if not text:
            note = "Спасибо за вложение! Я пока понимаю только текст."
            return Reply(f"{note}\n\n{MENU}", state, data)
        if text.lower().strip(" !.") in ("меню", "начало", "старт", "/start"):
            return Reply(self._greeting(turn))
        number = _number(text)
        today = tools.local(tools.now).date()
        if number is not None and state in NUMBERED_STATES:
            return self._numbered(turn, tools, state, data, number, today)
        if number is not None and state == "idle" and str(number) in MENU_DIGITS:
            return self._menu_item(turn, tools, MENU_DIGITS[str(number)], today)
        offered = [tools.local(datetime.fromisoformat(s)) for _, s in data.get("slots", [])]
        understood = understand(text, tools.catalogue(), today, CONTEXTS.get(state, "idle"), offered)
        kept = state in KEPT_STATES  # a question in between does not lose the list the client is choosing from
        answer = Answer(state=state if kept else "idle", data=data if kept else {})
        if understood.greeting:
            answer.say(self._hello(turn))
        handled = self._in_state(turn, tools, state, data, understood, answer, today)
        if not handled:
            self._requests(turn, tools, understood, answer, today)
        if not answer.parts:
            answer.say(f"Извините, я не поняла. {MENU}")
        return answer.reply()

    def _hello(self, turn: Turn) -> str:
        name = turn.client.get("name")
        return f"Здравствуйте, {name}!" if name else "Здравствуйте!"

    def _greeting(self, turn: Turn) -> str:
        return f"{self._hello(turn)} Я помощник салона {salon_name(turn.company)}.\n\n{MENU}"

    # ---- answers that a state waits for ------------------------------------------------------------
    def _in_state(
        self,
        turn: Turn,
        tools: SalonTools,
        state: str,
        data: dict[str, Any],
        understood: Understanding,
        answer: Answer,
        today: date,
    ) -> bool:
        """True when the message was the answer the state waited for (and has been acted on)."""
        if state == "reminder":
            return self._reminder_answer(tools, data, understood, answer, today)
        if state == "confirming_cancel":
            return self._cancel_answer(tools, data, understood, answer)
        if state in ("choosing_slot", "choosing_new_slot"):
            return self._slot_answer(tools, state, data, understood, answer, today)
        if state == "choosing_service" and understood.intents == ("book",) and understood.service_ids:
            chosen = [i for i in understood.service_ids if i in data.get("services", [])]
            if chosen:
                wish = _merged(Wish.from_data(data), understood.wish)
                self._book(tools, answer, [tuple(chosen)], wish, understood, today)
                return True
        return False

    def _numbered(
        self, turn: Turn, tools: SalonTools, state: str, data: dict[str, Any], number: int, today: date
    ) -> Reply:
        key = {"choosing_service": "services", "cancelling": "bookings", "rescheduling": "bookings"}.get(state, "slots")
        options: list[Any] = data.get(key, [])
        if not 1 <= number <= len(options):
            return Reply(f"Пожалуйста, выберите номер от 1 до {len(options)}.", state, data)
        chosen = options[number - 1]
        answer = Answer()
        if state == "choosing_service":
            self._book(tools, answer, [(chosen,)], Wish.from_data(data), None, today, queue=data.get("queue", []))
        elif state == "cancelling":
            self._ask_cancel(tools, answer, chosen, from_reminder=False)
        elif state == "rescheduling":
            self._start_move(tools, answer, chosen, Wish.from_data(data), data.get("shift"), today)
        elif state == "choosing_slot":
            self._book_slot(tools, answer, data, chosen)
        else:
            self._move_to_slot(tools, answer, data, chosen)
        return answer.reply()

    def _reminder_answer(
        self,
        tools: SalonTools,
        data: dict[str, Any],
        understood: Understanding,
        answer: Answer,
        today: date,
    ) -> bool:
        booking_id = data.get("booking_id")
        if understood.asks("reschedule") and booking_id is not None:
            shift = understood.when.shift_minutes
            self._start_move(tools, answer, booking_id, understood.wish, shift, today)
            self._courtesy(understood, answer, tools)
            return True
        if understood.asks("cancel") and booking_id is not None:
            self._ask_cancel(tools, answer, booking_id, from_reminder=True)
            return True
        if understood.asks("confirm") and booking_id is not None:
            try:
                booking = tools.my_booking(booking_id)
            except LookupError:
                answer.say("Эта запись уже отменена или прошла.")
                answer.state, answer.data = "idle", {}
                return True
            tools.answer_reminder(booking_id, "confirmed")
            answer.say(f"Спасибо! Ждём вас: {notices.visit(tools, booking)}.")
            answer.state, answer.data = "idle", {}
            if understood.asks("late"):
                tell_salon_late(tools, tools.now, booking)
                answer.say("Передала мастеру, что вы немного задержитесь.")
            return True
        return False

    def _cancel_answer(
        self, tools: SalonTools, data: dict[str, Any], understood: Understanding, answer: Answer
    ) -> bool:
        booking_id = data.get("booking_id")
        if understood.asks("no"):
            try:
                kept = tools.my_booking(booking_id)
                answer.say(f"Хорошо, запись остаётся: {notices.visit(tools, kept)}. Ждём вас!")
            except LookupError:
                answer.say("Хорошо, ничего не отменяю.")
            return True
        if understood.asks("yes"):
            try:
                booking = tools.cancel(booking_id)
            except LookupError:
                answer.say("Эта запись уже отменена или прошла.")
                return True
            if data.get("from_reminder"):
                tools.answer_reminder(booking_id, "cancelled")
            answer.say(
                f"Запись {describe(tools, booking)} отменена. Чтобы записаться снова, напишите, например:"
                " «запишите на следующую неделю»."
            )
            return True
        if set(understood.intents) - {"offtopic", "thanks"}:
            return False  # another request: answered as such; the question is dropped, nothing cancelled
        answer.wait_for(
            Reply(
                "Не поняла ответ. Отменить запись? Напишите 1 — да, отменить; 2 — нет, оставить.",
                "confirming_cancel",
                data,
            )
        )
        return True

    def _slot_answer(
        self,
        tools: SalonTools,
        state: str,
        data: dict[str, Any],
        understood: Understanding,
        answer: Answer,
        today: date,
    ) -> bool:
        if understood.pick is not None:
            chosen = data["slots"][understood.pick - 1]
            if state == "choosing_slot":
                self._book_slot(tools, answer, data, chosen)
            else:
                self._move_to_slot(tools, answer, data, chosen)
            return True
        if understood.asks("no"):
            answer.wait_for(Reply("Напишите, какой день и время вам удобны, и я поищу.", state, data))
            return True
        refining = understood.intents == ("book",) and not understood.service_ids and not understood.missing_service
        if refining and (understood.when.anything or understood.staff_id is not None):
            wish = _merged(Wish.from_data(data), understood.wish, replace_times=True)
            service_id = data["service_id"]
            if state == "choosing_slot":
                prefix = answers.wish_text(tools, wish, today)
                answer.wait_for(self._offers(tools, service_id, (prefix + ". ") if prefix else "", wish=wish))
            else:
                extra = {"state": "choosing_new_slot", "data": {"booking_id": data["booking_id"]}}
                answer.wait_for(self._offers(tools, service_id, "", wish=wish, moving=data["booking_id"], **extra))
            return True
        return False

    # ---- requests ----------------------------------------------------------------------------------
    def _requests(self, turn: Turn, tools: SalonTools, understood: Understanding, answer: Answer, today: date) -> None:
        for intent in understood.intents:
            if intent == "greeting":
                answer.parts = [self._greeting(turn)]
            elif intent == "book":
                self._book(tools, answer, list(understood.service_parts), understood.wish, understood, today, note=True)
            elif intent == "price":
                answer.say(answers.prices(tools, understood))
            elif intent == "services":
                answer.say(answers.services_answer(tools, understood))
            elif intent == "masters":
                answer.say(answers.masters_answer(tools, understood, today))
            elif intent == "my_bookings":
                answer.say(answers.my_bookings(tools, understood))
            elif intent == "cancel":
                self._start_cancel(tools, answer, understood)
            elif intent == "reschedule":
                self._choose_move(tools, answer, understood, today)
            elif intent == "info":
                answer.say(answers.salon_info(tools, understood, today))
            elif intent == "human":
                answer.wait_for(hand_over(tools, tools.now, "просит администратора"))
            elif intent == "late":
                booking = next(iter(tools.upcoming_bookings()), None)
                tell_salon_late(tools, tools.now, booking)
                answer.say("Спасибо, что предупредили! Передала мастеру.")
            elif intent == "offtopic":
                self._offtopic(turn, answer)
        self._courtesy(understood, answer, tools)

    def _courtesy(self, understood: Understanding, answer: Answer, tools: SalonTools) -> None:
        only = set(understood.intents) <= {"thanks", "goodbye"}
        if "thanks" in understood.intents and only:
            answer.say("Пожалуйста! Будем рады вас видеть.")
        if "goodbye" in understood.intents and only:
            answer.say("До свидания! Хорошего дня.")

    def _offtopic(self, turn: Turn, answer: Answer) -> None:
        """One polite answer with what the assistant can do; more messages off the salon's topics in a row get
        one short line each, not the whole explanation again."""
        if turn.state == "idle" and turn.data.get("offtopic"):
            answer.say("Я отвечаю только на вопросы о записи и услугах салона. Напишите «меню», чтобы увидеть их.")
            answer.state, answer.data, answer.stateful = "idle", {"offtopic": True}, True
            return
        answer.say(
            f"Я помощник салона {salon_name(turn.company)}: записываю на услуги, переношу и отменяю записи,"
            " подсказываю цены, мастеров и адрес. Напишите, например: «запишите на маникюр в субботу» или"
            f" «сколько стоит стрижка».\n\n{MENU}"
        )
        if not answer.stateful:
            answer.state, answer.data = "idle", {"offtopic": True}

    def _menu_item(self, turn: Turn, tools: SalonTools, intent: str, today: date) -> Reply:
        answer = Answer()
        self._requests(turn, tools, Understanding((intent,)), answer, today)
        return answer.reply()

    # ---- booking -----------------------------------------------------------------------------------
    def _offers(self, tools: SalonTools, service_id: int, prefix: str, **state: Any) -> Reply:
        return offer_slots(tools, service_id, prefix, days=self.days_ahead, limit=self.slots_offered, **state)

    def _book(
        self,
        tools: SalonTools,
        answer: Answer,
        parts: list[tuple[int, ...]],
        wish: Wish,
        understood: Understanding | None,
        today: date,
        *,
        note: bool = False,
        queue: list[int] | None = None,
    ) -> None:
        """Offer times for the one service asked for, or ask which service, naming what is missing."""
        notes = []
        if understood is not None and understood.missing_master:
            notes.append(f"Мастера по имени «{understood.missing_master.capitalize()}» в нашем салоне нет.")
        if understood is not None and understood.missing_service and not parts:
            notes.append(f"К сожалению, «{understood.missing_service}» в нашем салоне не делают.")
        staff = {m["id"]: m for m in tools.staff()}
        first = list(parts[0]) if parts else []
        nearest = not first and understood is not None and bool(understood.missing_service)
        if nearest and understood is not None:
            first = list(understood.related_services)  # what the salon has nearest to what was asked
        rest = [ids[0] for ids in parts[1:] if len(ids) == 1] + (queue or [])
        if wish.staff_id is not None and first:
            doing = [i for i in first if _does(staff.get(wish.staff_id), i)]
            if not doing:
                titles = ", ".join(s["title"] for s in answers.services_of(tools, first))
                notes.append(f"{staff_name(tools, wish.staff_id)} не делает: {titles}. Подберу другого мастера.")
                wish = wish.without_master()
            else:
                first = doing
        if len(first) == 1 and not nearest:  # a nearest service is offered as a choice, never swapped in
            service_id = first[0]
            said = answers.wish_text(tools, wish, today)
            prefix = " ".join(notes) + (" " if notes else "")
            if rest:
                prefix += "Запишу по очереди, начнём с первой услуги. "
            if said:
                prefix += f"Вы просили: {said}.\n"
            reply = self._offers(tools, service_id, prefix, wish=wish)
            if rest and reply.state == "choosing_slot":
                reply = Reply(reply.text, reply.state, {**reply.data, "queue": rest})
            answer.wait_for(reply)
            return
        services = answers.services_of(tools, first) if first else tools.services()
        if not first and wish.staff_id is not None:
            member = staff.get(wish.staff_id)
            services = [s for s in services if _does(member, s["id"])] or services
        if not services:
            answer.say(" ".join([*notes, "Сейчас нет услуг, доступных для записи."]))
            return
        lines = [f"{n}. {s['title']} — {answers.price(s)}" for n, s in enumerate(services, 1)]
        said = answers.wish_text(tools, wish, today)
        question = "Выберите услугу" + (f" ({said})" if said else "") + ", напишите её номер:"
        if rest:
            then = ", ".join(s["title"] for s in answers.services_of(tools, rest))
            question = f"Запишу по очереди: сначала эта услуга, потом {then}. " + question
        answer.wait_for(
            Reply(
                " ".join(notes) + (" " if notes else "") + question + "\n" + "\n".join(lines),
                "choosing_service",
                {"services": [s["id"] for s in services], "wish": wish.as_data(), "queue": rest},
            )
        )

    def _book_slot(self, tools: SalonTools, answer: Answer, data: dict[str, Any], chosen: list[Any]) -> None:
        staff_id, starts = chosen
        service_id = data["service_id"]
        starts_at = datetime.fromisoformat(starts)
        if starts_at < tools.now + timedelta(minutes=5):
            answer.wait_for(self._offers(tools, service_id, "Это время уже прошло. "))
            return
        try:
            booking = tools.book(service_id, staff_id, starts_at)
        except SlotTakenError:
            answer.wait_for(self._offers(tools, service_id, "Это время только что заняли. "))
            return
        except LookupError:
            answer.say(f"Эта услуга больше недоступна.\n\n{MENU}")
            return
        answer.say(notices.booked(tools, booking))
        queue = list(data.get("queue") or [])
        if queue:
            wish = Wish.from_data(data)  # the day and time asked for hold for the next service too
            rest = {"queue": queue[1:]} if queue[1:] else None
            prefix = "Теперь следующая услуга. "
            answer.wait_for(self._offers(tools, queue[0], prefix, data=rest, wish=wish if wish.anything else None))

    # ---- the client's bookings: cancel and move ----------------------------------------------------
    def _bookings_meant(
        self, tools: SalonTools, understood: Understanding, *, by_day: date | None
    ) -> tuple[list, list]:
        """(the upcoming bookings the message points at, all upcoming bookings)."""
        bookings = tools.upcoming_bookings()
        meant = bookings
        if by_day is not None:
            meant = [b for b in meant if tools.local(b["starts_at"]).date() == by_day]
        if understood.service_ids:
            meant = [b for b in meant if b["service_id"] in understood.service_ids]
        if understood.staff_id is not None:
            meant = [b for b in meant if b["staff_id"] == understood.staff_id]
        return meant, bookings

    def _start_cancel(self, tools: SalonTools, answer: Answer, understood: Understanding) -> None:
        meant, bookings = self._bookings_meant(tools, understood, by_day=understood.when.day)
        if not bookings:
            answer.say("У вас нет предстоящих записей, отменять нечего.")
            return
        if len(meant) == 1:
            self._ask_cancel(tools, answer, meant[0]["id"], from_reminder=False)
            return
        choices = meant or bookings
        lines = [f"{n}. {describe(tools, b)}" for n, b in enumerate(choices, 1)]
        answer.wait_for(
            Reply(
                "Какую запись отменить? Напишите номер:\n" + "\n".join(lines),
                "cancelling",
                {"bookings": [b["id"] for b in choices]},
            )
        )

    def _ask_cancel(self, tools: SalonTools, answer: Answer, booking_id: int, *, from_reminder: bool) -> None:
        try:
            booking = tools.my_booking(booking_id)
        except LookupError:
            answer.say("Эта запись уже отменена или прошла.")
            return
        answer.wait_for(
            Reply(
                f"Отменить запись {notices.visit(tools, booking)}?\nНапишите 1 — да, отменить; 2 — нет, оставить.",
                "confirming_cancel",
                {"booking_id": booking_id, "from_reminder": from_reminder},
            )
        )

    def _choose_move(self, tools: SalonTools, answer: Answer, understood: Understanding, today: date) -> None:
        meant, bookings = self._bookings_meant(tools, understood, by_day=understood.when.from_day)
        if not bookings:
            answer.say(
                "У вас нет предстоящих записей, переносить нечего. Чтобы записаться, напишите, например:"
                " «запишите на маникюр в субботу»."
            )
            return
        wish = understood.wish
        shift = understood.when.shift_minutes
        if len(meant) == 1 or len(bookings) == 1:
            self._start_move(tools, answer, (meant or bookings)[0]["id"], wish, shift, today)
            return
        choices = meant or bookings
        lines = [f"{n}. {describe(tools, b)}" for n, b in enumerate(choices, 1)]
        answer.wait_for(
            Reply(
                "Какую запись перенести? Напишите номер:\n" + "\n".join(lines),
                "rescheduling",
                {"bookings": [b["id"] for b in choices], "wish": wish.as_data(), "shift": shift},
            )
        )

    def _start_move(
        self, tools: SalonTools, answer: Answer, booking_id: int, wish: Wish, shift: int | None, today: date
    ) -> None:
        """Offer new times for the booking: at the shifted time ("на полчаса раньше"), or as asked, or the nearest."""
        try:
            booking = tools.my_booking(booking_id)
        except LookupError:
            answer.say("Эта запись уже отменена или прошла.")
            return
        if booking["service_id"] is None:
            answer.say("Эту запись я не могу перенести сама. Пожалуйста, позвоните в салон.")
            return
        if shift:
            moved = tools.local(booking["starts_at"] + timedelta(minutes=shift))
            wish = Wish(booking["staff_id"], moved.date(), None, moved.time().replace(second=0), None, None)
        said = answers.wish_text(tools, wish, today)
        prefix = f"Переносим запись {describe(tools, booking)}." + (f" Вы просили: {said}." if said else "") + "\n"
        answer.wait_for(
            self._offers(
                tools,
                booking["service_id"],
                prefix,
                state="choosing_new_slot",
                data={"booking_id": booking["id"]},
                wish=wish if wish.anything else None,
                exclude=(booking["staff_id"], booking["starts_at"]),
                moving=booking["id"],
            )
        )

    def _move_to_slot(self, tools: SalonTools, answer: Answer, data: dict[str, Any], chosen: list[Any]) -> None:
        staff_id, starts = chosen
        booking_id, service_id = data["booking_id"], data["service_id"]
        again = {"state": "choosing_new_slot", "data": {"booking_id": booking_id}, "moving": booking_id}
        if datetime.fromisoformat(starts) < tools.now + timedelta(minutes=5):
            answer.wait_for(self._offers(tools, service_id, "Это время уже прошло. ", **again))
            return
        try:
            moved = tools.reschedule(booking_id, staff_id, datetime.fromisoformat(starts))
        except SlotTakenError:
            answer.wait_for(self._offers(tools, service_id, "Это время только что заняли. ", **again))
            return
        except LookupError:
            answer.say("Эта запись уже отменена или прошла.")
            return
        answer.say(notices.moved(tools, moved))


def _does(member: dict[str, Any] | None, service_id: int) -> bool:
    return member is not None and (not member["service_ids"] or service_id in member["service_ids"])


def _merged(base: Wish, new: Wish, *, replace_times: bool = False) -> Wish:
    """A later message refines the wish: what it says replaces, what it does not say is kept."""
    times_said = new.at is not None or new.after is not None or new.before is not None
    keep_times = not (replace_times and times_said) and not times_said
    return Wish(
        new.staff_id if new.staff_id is not None else base.staff_id,
        new.day if new.day is not None else base.day,
        new.last_day if new.day is not None else base.last_day,
        base.at if keep_times else new.at,
        base.after if keep_times else new.after,
        base.before if keep_times else new.before,
    )
