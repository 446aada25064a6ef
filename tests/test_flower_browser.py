"""Flower as an operator sees it: Debian's Chromium, headless, driven by selenium through its ChromeDriver, against
all four worker types and Flower behind its basic auth. A wrong password gets the 401, the right one the
dashboard with every worker online, and an inbound task's page shows the hidden marker, never the chat."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from ops.standins.gateway import GatewayStandIn
from shared.core.settings import WorkerType
from shared.core.topology import HIDDEN_ARGUMENTS
from shared.inbound.payload import TASK_NAME
from tests.support.payloads import inbound_payload
from tests.support.processes import FleetProcess, running_workers, wait_until
from tests.support.redis_server import free_port
from workers.producer import enqueue_message

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
USER, PASSWORD = "ops", "s3cret-browser"
PHONE_DIGITS = "9115550142"  # the client's number: these digits are in every way it could be written
CHAT_TEXT = "Запишите меня на окрашивание, Анна Смирнова"


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """Headless Chromium as root in a container: no sandbox, no /dev/shm, a window wide enough for every column."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not binary.exists():
            raise RuntimeError(f"{binary} is missing (ops/run-tests installs Debian's chromium and chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.execute_cdp_cmd("Network.enable", {})
    try:
        yield driver
    finally:
        driver.quit()


def sign_in(driver: WebDriver, credentials: str) -> None:
    """Every request the page makes from now on (the page, its scripts, its XHR) carries these credentials."""
    header = "Basic " + base64.b64encode(credentials.encode()).decode()
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": header}})


def status_of_page(driver: WebDriver) -> int:
    return int(driver.execute_script("return performance.getEntriesByType('navigation')[0].responseStatus"))


def wait_in_page(
    driver: WebDriver, predicate: Callable[[], object], what: str, shot: Path, timeout: float = 60
) -> object:
    """Wait for what the page's scripts render; on a timeout keep a screenshot and say where it is."""

    def holds() -> object:
        try:
            return predicate()
        except (StaleElementReferenceException, WebDriverException):  # a table redrawn under our feet
            return None

    try:
        return wait_until(holds, timeout, what, interval=0.2)
    except TimeoutError:
        driver.save_screenshot(str(shot))
        body = driver.find_element(By.TAG_NAME, "body").text
        raise AssertionError(
            f"timed out waiting for {what} at {driver.current_url}; screenshot {shot}\n{body}"
        ) from None


def flower_has_ended(port: int, task_id: str) -> bool:
    """Flower's own record of the task (its API, under the same credentials) says it ended."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/task/info/{task_id}")
    request.add_header("Authorization", "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read()).get("state") in {"SUCCESS", "FAILURE"}
    except (urllib.error.URLError, ConnectionError, ValueError):  # not known yet: 404
        return False


def online_workers(driver: WebDriver) -> set[str]:
    """The workers the Workers page's table lists as online (the table is drawn and redrawn from Flower's API)."""
    online = set()
    for row in driver.find_elements(By.CSS_SELECTOR, "#workers-table tbody tr"):
        links = row.find_elements(By.CSS_SELECTOR, "a.worker-name-link")
        if links and "Online" in row.text:
            online.add(links[0].get_attribute("textContent"))
    return online


def test_flower_in_a_browser_refuses_a_wrong_password_shows_the_fleet_and_hides_inbound_arguments(
    inbound_env: dict[str, str], gateway: GatewayStandIn, browser: WebDriver, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**inbound_env, "FLEET_FLOWER_PORT": str(port), "FLEET_FLOWER_USER": USER, "FLEET_FLOWER_PASSWORD": PASSWORD}
    with ExitStack() as stack:
        flower = FleetProcess(["flower"], env, tmp_path / "flower.log")  # comes up while the workers do
        stack.callback(flower.stop)
        workers = stack.enter_context(running_workers([worker_type.value for worker_type in WorkerType], env, tmp_path))
        nodes = {process.node for process in workers.values()}  # type: ignore[attr-defined]

        # A wrong password: Flower answers 401 with its basic-auth challenge (headless Chromium leaves the page
        # blank behind the sign-in prompt it cannot show), never the dashboard.
        sign_in(browser, f"{USER}:wrong")

        def refused() -> bool:
            try:
                browser.get(f"{base}/")
                return status_of_page(browser) == 401
            except WebDriverException:  # Flower not listening yet: Chromium's own error page
                return False

        try:
            wait_until(refused, 30, "Flower's 401 to a wrong password", interval=0.2)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{browser.page_source[:2000]}\n{flower.output()}") from None
        assert "Flower" not in browser.title
        assert not browser.find_elements(By.ID, "workers-table")
        assert not browser.find_element(By.TAG_NAME, "body").text

        # The right credentials: the Workers page lists every worker type online, under the names the fleet gave.
        sign_in(browser, f"{USER}:{PASSWORD}")
        browser.get(f"{base}/workers")
        assert status_of_page(browser) == 200
        wait_in_page(browser, lambda: online_workers(browser) == nodes, f"{sorted(nodes)} online", tmp_path / "w.png")
        assert {node.split("-")[0] for node in online_workers(browser)} == {wt.value for wt in WorkerType}
        assert browser.find_element(By.ID, "workers-online").text == "4"
        screenshot = tmp_path / "flower-workers.png"
        assert browser.save_screenshot(str(screenshot))
        print(f"Flower's Workers page: {screenshot}")
        assert screenshot.stat().st_size > 1000
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # An inbound message, answered and known to Flower; then the Tasks page and the task's own page.
        task_id = enqueue_message(inbound_payload(CHAT_TEXT, chat="+7 911 555-01-42"))
        wait_until(lambda: gateway.count() >= 1, 30, "the reply at the gateway")
        wait_until(lambda: flower_has_ended(port, task_id), 30, f"task {task_id} ended in Flower's API")
        link = f"a[href$='/task/{task_id}']"
        browser.get(f"{base}/tasks")
        wait_in_page(
            browser, lambda: browser.find_elements(By.CSS_SELECTOR, link), "the task listed", tmp_path / "t.png"
        )
        tasks_page = browser.page_source
        browser.find_element(By.CSS_SELECTOR, link).click()
        wait_in_page(
            browser,
            lambda: browser.find_element(By.ID, "taskid").get_attribute("textContent") == task_id,
            f"the page of task {task_id}",
            tmp_path / "task.png",
        )
        page, text = browser.page_source, browser.find_element(By.TAG_NAME, "body").text
        # Every task Flower keeps, as its API gives them to the same signed-in browser (the chat's drain too).
        browser.get(f"{base}/api/tasks")
        tasks = json.loads(browser.find_element(By.TAG_NAME, "pre").text)
    assert TASK_NAME in text
    assert text.count(HIDDEN_ARGUMENTS) >= 2, text  # args and kwargs
    inbound = [task for task in tasks.values() if (task.get("name") or "").startswith("workers.inbound.")]
    assert TASK_NAME in {task["name"] for task in inbound}, inbound
    assert {(task["args"], task["kwargs"]) for task in inbound} == {(HIDDEN_ARGUMENTS, HIDDEN_ARGUMENTS)}
    for private in (PHONE_DIGITS, "555-01-42", CHAT_TEXT, "окрашивание", "Смирнова"):
        assert private not in page
        assert private not in tasks_page
        assert private not in json.dumps(tasks, ensure_ascii=False)
    assert PASSWORD not in flower.output()
