"""The Functions step: publish the bundle, then wait until the host indexed it."""

from __future__ import annotations

import time
import zipfile

from ..digest import zip_content_sha256
from ..errors import ApplyError
from .builddir import BUNDLE
from .bundle import function_names
from .context import Context
from .options import Confirm
from .plan import ApplyAction, PlannedChange, StepPlan
from .steps import Step, check_saved, input_digest, show_plan
from .waiting import wait_indexed

#: Blob a Consumption (Y1) Function App runs from; the Azure template points
#: WEBSITE_RUN_FROM_PACKAGE at it (ai4ec.render.azure_resources.PACKAGE_CONTAINER/BLOB).
PACKAGE_PATH = "ai4ec-packages/functions.zip"


class FunctionsStep(Step):
    """Publish ``functions/bundle.zip`` to the Function App."""

    key, title = "functions", "Functions bundle"

    def run(self, ctx: Context, confirm: Confirm) -> StepPlan:
        """Zip deploy (Elastic Premium) or package blob + restart (Consumption)."""
        del confirm  # publishing replaces code, it deletes nothing
        plan = StepPlan(self.key)
        if not ctx.build.has(BUNDLE):
            plan.notes.append("the build has no functions/bundle.zip")
            show_plan(ctx, plan)
            return plan
        data = ctx.build.read(BUNDLE)
        t = ctx.target()
        method = "package blob" if t.functions_consumption else "zip deploy"
        # The bundle is known by its entries, not its deflated bytes: the same files
        # compressed by another zlib are no change and no redeploy (see compiler.digest).
        try:
            content = zip_content_sha256(data)[0]
        except zipfile.BadZipFile:
            raise ApplyError(f"{BUNDLE} is not a zip archive") from None
        digest = input_digest(t.subscription_id, t.resource_group, t.function_app, method, content)
        recorded = ctx.recorded(self.key)
        sha = content[:12]
        if recorded == digest and not ctx.options.refresh:
            plan.notes.append(f"no changes since the last apply (bundle {sha})")
            show_plan(ctx, plan)
            return plan
        action = ApplyAction.UPDATE if recorded else ApplyAction.CREATE
        plan.changes.append(
            PlannedChange(
                action, "Functions bundle", t.function_app, note=f"bundle.zip {sha}, {method}"
            )
        )
        show_plan(ctx, plan)
        if ctx.options.plan:
            return plan
        check_saved(ctx, plan)
        az = ctx.azure()
        ctx.lock()
        started = time.monotonic()
        if t.functions_consumption:
            url = (
                az.blob_endpoint(t.resource_group, t.storage_account).rstrip("/")
                + "/"
                + PACKAGE_PATH
            )
            ctx.console.say(f"  uploading bundle.zip ({len(data)} bytes) to {url}")
            az.upload_blob(url, data)
            az.site_action(t.resource_group, t.function_app, "restart")
            az.site_action(t.resource_group, t.function_app, "syncfunctiontriggers")
        else:
            host = az.scm_host(t.resource_group, t.function_app)
            if host is None:
                raise ApplyError(
                    f"Function App {t.function_app} does not exist in {t.resource_group}; "
                    "apply --target azure first"
                )
            ctx.console.say(f"  zip deploy of bundle.zip ({len(data)} bytes) to {host}")
            az.zip_deploy(host, data)
        ctx.console.say(f"  published in {time.monotonic() - started:.0f}s")
        wait_indexed(ctx, function_names(data))
        ctx.record(self.key, digest)
        return plan
