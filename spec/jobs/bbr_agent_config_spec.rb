# frozen_string_literal: true

# jobs/bbr-agent/templates/bbr-agent.yml.erb -> /var/vcap/jobs/bbr-agent/config/bbr-agent.yml

# The seven script kinds of the BBR contract, in its order.
kinds = %w[
  metadata pre-backup-lock backup post-backup-unlock pre-restore-lock restore post-restore-unlock
].freeze

bad_durations = ['5 minutes', '30', 30, '1.5h', '-1m', '1d', '', 'none please', "5m\nlog_level: trace", true].freeze

RSpec.describe 'bbr-agent job: config/bbr-agent.yml' do
  let(:job) { BoshTemplate::Job.new('bbr-agent') }
  let(:template) { job.template('config/bbr-agent.yml') }

  def render(bbr_agent = {})
    template.render('bbr_agent' => bbr_agent)
  end

  def config(bbr_agent = {})
    YAML.safe_load(render(bbr_agent))
  end

  # The error a template raises, which the director shows as "Error filling in template".
  def render_error(bbr_agent)
    render(bbr_agent)
    raise 'the template rendered without an error'
  rescue ArgumentError => e
    e.message
  end

  describe 'with no properties set' do
    it 'renders the documented defaults' do
      expect(config).to eq(
        'timeouts' => {
          'metadata' => '1m',
          'pre-backup-lock' => '30m',
          'backup' => nil,
          'post-backup-unlock' => '30m',
          'pre-restore-lock' => '30m',
          'restore' => nil,
          'post-restore-unlock' => '30m'
        },
        'kill_grace' => '10s',
        'bbr_version' => '1.9.73',
        'log_level' => 'info',
        'max_in_flight' => 10
      )
    end

    it 'writes no limit as an explicit null, in the order of the contract' do
      text = render
      expect(text).to include("  backup: null\n", "  restore: null\n")
      expect(text.scan(/^  ([a-z-]+):/).flatten).to eq(kinds)
      expect(text.scan(/^([a-z_]+):/).flatten)
        .to eq(%w[timeouts kill_grace bbr_version log_level max_in_flight])
    end

    it 'keeps bbr_version a string' do
      expect(config['bbr_version']).to be_a(String)
    end
  end

  describe 'overrides' do
    kinds.each do |kind|
      it "sets the #{kind} timeout and leaves the others alone" do
        rendered = config('timeouts' => { kind => '2h' })['timeouts']
        expect(rendered[kind]).to eq('2h')
        expect(rendered.reject { |k, _| k == kind }).to eq(config['timeouts'].reject { |k, _| k == kind })
      end

      it "lifts the #{kind} limit with none" do
        expect(config('timeouts' => { kind => 'none' })['timeouts'][kind]).to be_nil
      end
    end

    it 'accepts every unit' do
      %w[500ms 45s 5m 3h].each do |value|
        expect(config('timeouts' => { 'backup' => value })['timeouts']['backup']).to eq(value)
      end
    end

    it 'falls back to the default for a null value, as the director does (so none exists)' do
      expect(config('timeouts' => { 'pre-backup-lock' => nil })['timeouts']['pre-backup-lock']).to eq('30m')
    end

    it 'sets kill_grace, including 0s for SIGKILL at once' do
      expect(config('kill_grace' => '30s')['kill_grace']).to eq('30s')
      expect(config('kill_grace' => '0s')['kill_grace']).to eq('0s')
    end

    it 'sets bbr_version' do
      expect(config('bbr_version' => '1.10.0')['bbr_version']).to eq('1.10.0')
    end

    it 'sets each log level' do
      %w[error warn info debug trace].each do |level|
        expect(config('log_level' => level)['log_level']).to eq(level)
      end
    end

    it 'sets max_in_flight from an integer or a string of digits (as variables give)' do
      expect(config('max_in_flight' => 1)['max_in_flight']).to eq(1)
      expect(config('max_in_flight' => '25')['max_in_flight']).to eq(25)
    end

    it 'renders the same whatever the instance' do
      other = template.render({}, { 'name' => 'db', 'index' => 3, 'bootstrap' => false })
      expect(other).to eq(render)
    end
  end

  describe 'invalid values fail the render, naming the property' do
    kinds.each do |kind|
      it "rejects bad #{kind} timeouts" do
        bad_durations.each do |bad|
          expect(render_error('timeouts' => { kind => bad }))
            .to match(/property 'bbr_agent\.timeouts\.#{kind}' is .*: write a whole number and a unit .*or none for no limit/)
        end
      end
    end

    it 'rejects a zero timeout, pointing at none' do
      expect(render_error('timeouts' => { 'backup' => '0s' }))
        .to eq("bbr-agent: property 'bbr_agent.timeouts.backup' is \"0s\": " \
               'a timeout must be more than zero; write none for no limit')
    end

    it 'rejects a bad kill_grace, and none (a grace period must end)' do
      ['none', '10', 10, 'soon', '10 s'].each do |bad|
        expect(render_error('kill_grace' => bad))
          .to match(/property 'bbr_agent\.kill_grace' is .*: write a whole number and a unit/)
      end
    end

    it 'rejects a bbr_version that is not MAJOR.MINOR.PATCH' do
      ['1.9', 'v1.9.73', '1.9.73-rc.1', '1.9.x', 1.9, "1.9.73\nlog_level: trace"].each do |bad|
        expect(render_error('bbr_version' => bad))
          .to match(/property 'bbr_agent\.bbr_version' is .*: write a plain BBR version MAJOR\.MINOR\.PATCH/)
      end
    end

    it 'rejects an unknown log level, naming the choices' do
      %w[INFO verbose warning].each do |bad|
        expect(render_error('log_level' => bad))
          .to eq("bbr-agent: property 'bbr_agent.log_level' is #{bad.inspect}: " \
                 'write one of error, warn, info, debug, trace')
      end
    end

    it 'rejects a max_in_flight that is not a positive integer' do
      [0, -1, '0', 'ten', 1.5, '2.5', true, ''].each do |bad|
        expect(render_error('max_in_flight' => bad))
          .to match(/property 'bbr_agent\.max_in_flight' is .*: write a whole number above zero/)
      end
    end
  end
end
