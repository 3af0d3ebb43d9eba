"""Every URL of the site. Each view carries its own access decorator;
tests/test_web_access.py walks this list to prove it."""
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from webapp.api import (audit as api_audit, etm as etm_api, machines as api_machines, results as api_results,
                        slots as api_slots, targets as api_targets, uploads as api_uploads, views as api)
from webapp.views import accounts, audit, campaigns, dashboard, etm, jobs, machines, targets, tasksets, uploads

api_urls = [
    path("openapi.json", api.openapi, name="api-schema"),
    path("status", api.status, name="api-status"),
    path("audit", api_audit.audit, name="api-audit"),
    path("distributor", api.distributor, name="api-distributor"),
    path("distributor/<str:action>", api.control, name="api-control"),
    path("slots", api_slots.slots, name="api-slots"),
    path("slots/<str:target>/<int:index>", api_slots.slot, name="api-slot"),
    path("check", api.check_only, name="api-check"),
    path("jobs", api.jobs, name="api-jobs"),
    path("jobs/<int:job_id>", api.job, name="api-job"),
    path("jobs/<int:job_id>/cancel", api.job_cancel, name="api-job-cancel"),
    path("jobs/<int:job_id>/resubmit", api.job_resubmit, name="api-job-resubmit"),
    path("jobs/<int:job_id>/priority", api.job_priority, name="api-job-priority"),
    path("jobs/<int:job_id>/tasksets", api.job_tasksets, name="api-job-tasksets"),
    path("jobs/<int:job_id>/export/<str:format>", api.job_export, name="api-job-export"),
    path("jobs/<int:job_id>/results", api_results.job_results, name="api-job-results"),
    path("tasksets/<int:taskset_id>", api.taskset, name="api-taskset"),
    path("campaigns", api.campaigns, name="api-campaigns"),
    path("campaigns/<int:campaign_id>", api.campaign, name="api-campaign"),
    path("campaigns/<int:campaign_id>/stop", api.campaign_stop, name="api-campaign-stop"),
    path("campaigns/<int:campaign_id>/continue", api.campaign_continue, name="api-campaign-continue"),
    path("targets", api_targets.targets, name="api-targets"),
    path("targets/<int:target_id>", api_targets.target, name="api-target"),
    path("binaries", api_uploads.binaries, name="api-binaries"),
    path("images", api_uploads.images, name="api-images"),
    path("machines", api_machines.machines, name="api-machines"),
    path("machines/<int:machine_id>", api_machines.machine, name="api-machine"),
    path("machines/<int:machine_id>/<str:action>", api_machines.machine_order, name="api-machine-order"),
    path("etms", etm_api.models, name="api-etms"),
    path("etms/<str:name>", etm_api.model, name="api-etm"),
    path("etms/<str:name>/export", etm_api.model_export, name="api-etm-export"),
    path("etms/<str:name>/fit", etm_api.model_fit, name="api-etm-fit"),
    path("etms/<str:name>/calibrate", etm_api.model_calibrate, name="api-etm-calibrate"),
    path("jobs/<int:job_id>/relabel", etm_api.job_relabel, name="api-job-relabel"),
    path("campaigns/<int:campaign_id>/results", api_results.campaign_results, name="api-campaign-results"),
]

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("profile/", accounts.profile, name="profile"),
    path("profile/tokens/new", accounts.token_create, name="token-create"),
    path("profile/tokens/<int:token_id>/revoke", accounts.token_revoke, name="token-revoke"),

    path("", dashboard.dashboard, name="dashboard"),
    path("dashboard/live", dashboard.dashboard_fragment, name="dashboard-fragment"),
    path("audit/", audit.audit, name="audit"),
    path("distributor/max", dashboard.set_max_machines, name="set-max-machines"),
    path("distributor/<str:action>", dashboard.control, name="control"),
    path("slots/<str:target>/<int:index>/<str:health>", dashboard.set_slot_health, name="slot-health"),

    path("submit/", jobs.submit, name="submit"),
    path("jobs/", jobs.jobs, name="jobs"),
    path("jobs/<int:job_id>/", jobs.job, name="job"),
    path("jobs/<int:job_id>/live", jobs.job_fragment, name="job-fragment"),
    path("jobs/<int:job_id>/cancel", jobs.cancel, name="job-cancel"),
    path("jobs/<int:job_id>/resubmit", jobs.resubmit, name="job-resubmit"),
    path("jobs/<int:job_id>/export/<str:format>", jobs.export, name="job-export"),
    path("jobs/<int:job_id>/<str:name>.svg", jobs.job_plot, name="job-plot"),

    path("campaigns/", campaigns.campaigns, name="campaigns"),
    path("campaigns/new", campaigns.campaign_new, name="campaign-new"),
    path("campaigns/<int:campaign_id>/", campaigns.campaign, name="campaign"),
    path("campaigns/<int:campaign_id>/stop", campaigns.campaign_stop, name="campaign-stop"),
    path("campaigns/<int:campaign_id>/continue", campaigns.campaign_continue, name="campaign-continue"),
    path("campaigns/<int:campaign_id>/<str:name>.svg", campaigns.campaign_plot, name="campaign-plot"),
    path("campaigns/<int:campaign_id>/tasksets", campaigns.campaign_tasksets, name="campaign-tasksets"),

    path("tasksets/<int:taskset_id>/", tasksets.taskset, name="taskset"),
    path("tasksets/<int:taskset_id>/gantt.svg", tasksets.taskset_gantt, name="taskset-gantt"),

    path("machines/", machines.machines, name="machines"),
    path("machines/<int:machine_id>/", machines.machine, name="machine"),
    path("machines/<int:machine_id>/console", machines.console, name="machine-console"),
    path("machines/<int:machine_id>/<str:kind>.log", machines.download, name="machine-download"),

    path("targets/", targets.targets, name="targets"),
    path("targets/new", targets.target_edit, name="target-new"),
    path("targets/<int:target_id>/edit", targets.target_edit, name="target-edit"),
    path("targets/<int:target_id>/calibrate", etm.calibrate, name="target-calibrate"),
    path("etm/", etm.models, name="etms"),
    path("etm/<str:name>/", etm.model, name="etm"),
    path("etm/<str:name>/<str:pkg>.svg", etm.plot, name="etm-plot"),
    path("jobs/<int:job_id>/relabel", etm.relabel_job, name="job-relabel"),
    path("files/", uploads.files, name="binaries"),
    path("files/binaries", uploads.upload, {"kind": "binary"}, name="binary-upload"),
    path("files/images", uploads.upload, {"kind": "image"}, name="image-upload"),
    path("files/<str:sha256>", uploads.content, name="content"),

    path("api/", include(api_urls)),
    path("admin/", admin.site.urls),
]
